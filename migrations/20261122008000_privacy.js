/**
 * Privacy: random PatientKeys with their date offsets (HIPAA 164.514(c): not derived from the
 * MRN), the linkage table only re-identification reads, the reverse map of de-identified UIDs
 * per project, per-project de-identification options (PS3.15 E.3), burned-in annotation
 * clearances and the audited re-identification requests. The HMAC key is never stored here.
 */

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.schema.createTable('patient_keys', (t) => {
    t.bigIncrements('id').primary();
    t.text('patient_key').notNullable().unique();
    t.integer('date_offset_days').notNullable();
    // HMAC(key, normalised issuer | MRN): recognises a returning patient; NULL for patients without an identifier.
    t.text('identity_hmac').unique();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw('ALTER TABLE patient_keys ADD CONSTRAINT patient_keys_offset_nonzero CHECK (date_offset_days <> 0)');

  await knex.schema.createTable('patient_key_identities', (t) => {
    t.bigInteger('patient_key_id').notNullable().references('patient_keys.id').onDelete('CASCADE');
    t.text('issuer').notNullable();
    t.text('mrn').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['patient_key_id', 'issuer', 'mrn']);
  });

  await knex.schema.alterTable('patients', (t) => {
    t.bigInteger('patient_key_id').references('patient_keys.id');
    t.index(['patient_key_id']);
  });

  await knex.schema.createTable('fhir_patient_keys', (t) => {
    t.text('resource_id').primary();
    t.bigInteger('patient_key_id').notNullable().references('patient_keys.id');
    t.index(['patient_key_id']);
  });

  await knex.schema.createTable('deid_uids', (t) => {
    t.text('project_id').notNullable().references('projects.id').onDelete('CASCADE');
    t.text('deid_uid').notNullable();
    t.text('uid').notNullable();
    t.text('level').notNullable();
    t.primary(['project_id', 'deid_uid']);
    // Backfill asks "is this study recorded for this project?" by original UID.
    t.index(['uid', 'project_id']);
  });
  await knex.raw(`ALTER TABLE deid_uids ADD CONSTRAINT deid_uids_level_check CHECK (level IN ('study', 'series', 'instance'))`);

  await knex.schema.alterTable('projects', (t) => {
    t.jsonb('deid_options');
  });

  await knex.schema.createTable('burned_in_clearances', (t) => {
    t.text('sop_instance_uid').primary();
    t.text('cleared_by').notNullable();
    t.timestamp('cleared_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.text('note');
  });

  await knex.schema.createTable('reidentification_requests', (t) => {
    t.bigIncrements('id').primary();
    t.text('project_id').notNullable().references('projects.id');
    t.text('requester').notNullable();
    t.text('reason').notNullable();
    t.text('approval_reference').notNullable();
    t.specificType('patient_keys', 'text[]').notNullable();
    t.text('purpose_of_use').notNullable();
    t.text('status').notNullable().defaultTo('requested');
    t.text('decided_by');
    t.timestamp('decided_at', { useTz: true });
    t.timestamp('resolved_at', { useTz: true });
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['project_id', 'created_at']);
    t.index(['requester']);
  });
  await knex.raw(`ALTER TABLE reidentification_requests ADD CONSTRAINT reidentification_requests_status_check
    CHECK (status IN ('requested', 'approved', 'refused', 'resolved'))`);
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex.schema.dropTableIfExists('reidentification_requests');
  await knex.schema.dropTableIfExists('burned_in_clearances');
  await knex.schema.alterTable('projects', (t) => {
    t.dropColumn('deid_options');
  });
  await knex.schema.dropTableIfExists('deid_uids');
  await knex.schema.dropTableIfExists('fhir_patient_keys');
  await knex.schema.alterTable('patients', (t) => {
    t.dropColumn('patient_key_id');
  });
  await knex.schema.dropTableIfExists('patient_key_identities');
  await knex.schema.dropTableIfExists('patient_keys');
};
