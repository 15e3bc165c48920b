/**
 * Project membership is approved: a member a data manager proposes is `requested` until a
 * principal investigator of the project (or an admin) approves it; only `active` members count
 * as members (sign-ins take their projects from them). Who asked and who decided are kept.
 */

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.schema.alterTable('project_members', (t) => {
    t.text('status').notNullable().defaultTo('active');
    t.text('requested_by');
    t.text('decided_by');
    t.timestamp('decided_at', { useTz: true });
  });
  await knex.raw(`ALTER TABLE project_members ADD CONSTRAINT project_members_status_check CHECK (status IN ('active', 'requested'))`);
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex('project_members').where({ status: 'requested' }).delete();
  await knex.raw('ALTER TABLE project_members DROP CONSTRAINT project_members_status_check');
  await knex.schema.alterTable('project_members', (t) => {
    t.dropColumn('decided_at');
    t.dropColumn('decided_by');
    t.dropColumn('requested_by');
    t.dropColumn('status');
  });
};
