/**
 * Cohort exports wait for their principal investigator: a researcher's bulk export is recorded
 * `awaiting-approval` until a PI of each of its projects (or an admin) approves it, or `refused`
 * when one refuses. The kick-off's authorization (`grant`: who asked, its role, projects and
 * scopes, no secret) and the parsed request (`job`) are kept with the row, so whichever process
 * takes the approval can start the export. `projects` are the projects it reads (those that must
 * approve); `approvals` records who approved for which project and when.
 */

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.schema.alterTable('bulk_exports', (t) => {
    t.jsonb('grant');
    t.jsonb('job');
    t.specificType('projects', 'text[]');
    t.jsonb('approvals');
    t.jsonb('refusal');
  });
  await knex.raw('ALTER TABLE bulk_exports DROP CONSTRAINT bulk_exports_state_check');
  await knex.raw(`ALTER TABLE bulk_exports ADD CONSTRAINT bulk_exports_state_check
    CHECK (state IN ('awaiting-approval', 'refused', 'accepted', 'in-progress', 'completed', 'failed'))`);
  // PIs list the exports waiting for them: few rows, found by state.
  await knex.raw(`CREATE INDEX bulk_exports_awaiting ON bulk_exports (created_at) WHERE state = 'awaiting-approval'`);
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex('bulk_exports').whereIn('state', ['awaiting-approval', 'refused']).delete();
  await knex.raw('DROP INDEX IF EXISTS bulk_exports_awaiting');
  await knex.raw('ALTER TABLE bulk_exports DROP CONSTRAINT bulk_exports_state_check');
  await knex.raw(`ALTER TABLE bulk_exports ADD CONSTRAINT bulk_exports_state_check
    CHECK (state IN ('accepted', 'in-progress', 'completed', 'failed'))`);
  await knex.schema.alterTable('bulk_exports', (t) => {
    t.dropColumn('refusal');
    t.dropColumn('approvals');
    t.dropColumn('projects');
    t.dropColumn('job');
    t.dropColumn('grant');
  });
};
