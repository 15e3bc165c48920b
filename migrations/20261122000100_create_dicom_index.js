/**
 * The DICOM index: patients, studies, series, instances, and superseded instance versions.
 * Every QIDO-RS / FHIR match key has a typed, indexed column; the full header is JSONB.
 */

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.schema.createTable('patients', (t) => {
    t.bigIncrements('id').primary();
    // issuer + '|' + PatientID, or 'study|' + StudyInstanceUID when the instance carries no PatientID.
    t.text('identity_key').notNullable().unique();
    t.text('patient_id');
    t.text('issuer_of_patient_id');
    t.text('patient_name');
    t.date('birth_date');
    t.text('sex');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['patient_id']);
  });

  await knex.schema.createTable('studies', (t) => {
    t.bigIncrements('id').primary();
    t.text('study_uid').notNullable().unique();
    t.bigInteger('patient_pk').notNullable().references('patients.id');
    // Patient attributes are denormalised here so a study-level query is one index scan.
    t.text('patient_id');
    t.text('issuer_of_patient_id');
    t.text('patient_name');
    t.text('patient_name_norm');
    t.date('patient_birth_date');
    t.text('patient_sex');
    t.date('study_date');
    t.text('study_time');
    t.text('accession_number');
    t.text('study_id');
    t.text('study_description');
    t.text('referring_physician_name');
    t.text('institution_name');
    t.integer('num_series').notNullable().defaultTo(0);
    t.integer('num_instances').notNullable().defaultTo(0);
    t.specificType('modalities', 'text[]').notNullable().defaultTo('{}');
    t.specificType('sop_classes', 'text[]').notNullable().defaultTo('{}');
    t.jsonb('dataset').notNullable().defaultTo('{}');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['patient_pk']);
    t.index(['patient_id']);
    t.index(['study_date']);
    t.index(['accession_number']);
    t.index(['updated_at']);
  });
  await knex.raw('CREATE INDEX studies_patient_name_norm_idx ON studies (patient_name_norm text_pattern_ops)');
  await knex.raw('CREATE INDEX studies_modalities_idx ON studies USING gin (modalities)');

  await knex.schema.createTable('series', (t) => {
    t.bigIncrements('id').primary();
    t.text('series_uid').notNullable().unique();
    t.bigInteger('study_pk').notNullable().references('studies.id');
    t.text('modality');
    t.integer('series_number');
    t.text('series_description');
    t.date('series_date');
    t.text('series_time');
    t.text('body_part_examined');
    t.text('laterality');
    t.text('manufacturer');
    t.text('manufacturer_model_name');
    t.text('station_name');
    t.specificType('device_type_codes', 'text[]').notNullable().defaultTo('{}');
    t.date('pps_start_date');
    t.text('pps_start_time');
    t.integer('num_instances').notNullable().defaultTo(0);
    t.jsonb('dataset').notNullable().defaultTo('{}');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['study_pk']);
    t.index(['modality']);
    t.index(['laterality']);
    t.index(['manufacturer_model_name']);
  });
  await knex.raw('CREATE INDEX series_device_type_codes_idx ON series USING gin (device_type_codes)');

  await knex.schema.createTable('instances', (t) => {
    t.bigIncrements('id').primary();
    t.text('sop_instance_uid').notNullable().unique();
    t.bigInteger('series_pk').notNullable().references('series.id');
    t.bigInteger('study_pk').notNullable().references('studies.id');
    t.text('sop_class_uid').notNullable();
    t.integer('instance_number');
    t.text('image_laterality');
    t.specificType('frame_lateralities', 'text[]').notNullable().defaultTo('{}');
    t.integer('number_of_frames');
    t.integer('rows');
    t.integer('columns');
    t.integer('bits_allocated');
    t.integer('bits_stored');
    t.integer('samples_per_pixel');
    t.text('photometric_interpretation');
    t.date('content_date');
    t.text('content_time');
    t.text('acquisition_datetime');
    t.text('transfer_syntax_uid').notNullable();
    t.text('specific_character_set');
    // Content address of the stored bytes (SHA-256 hex) and where the pieces are inside them.
    t.string('blob_key', 64).notNullable();
    t.bigInteger('size').notNullable();
    t.boolean('has_file_meta').notNullable();
    t.bigInteger('header_length').notNullable();
    t.bigInteger('pixel_data_offset');
    t.jsonb('frames').notNullable().defaultTo('[]');
    t.jsonb('dataset').notNullable();
    t.integer('version').notNullable().defaultTo(1);
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['series_pk', 'instance_number']);
    t.index(['study_pk']);
    t.index(['sop_class_uid']);
    t.index(['image_laterality']);
    t.index(['blob_key']);
  });
  await knex.raw('CREATE INDEX instances_frame_lateralities_idx ON instances USING gin (frame_lateralities)');

  // Earlier bytes of an instance that was stored again with different content: never destroyed.
  await knex.schema.createTable('instance_versions', (t) => {
    t.bigIncrements('id').primary();
    t.text('sop_instance_uid').notNullable();
    t.integer('version').notNullable();
    t.text('study_uid').notNullable();
    t.text('series_uid').notNullable();
    t.string('blob_key', 64).notNullable();
    t.bigInteger('size').notNullable();
    t.timestamp('stored_at', { useTz: true }).notNullable();
    t.timestamp('superseded_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.unique(['sop_instance_uid', 'version']);
    t.index(['blob_key']);
  });
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex.schema.dropTableIfExists('instance_versions');
  await knex.schema.dropTableIfExists('instances');
  await knex.schema.dropTableIfExists('series');
  await knex.schema.dropTableIfExists('studies');
  await knex.schema.dropTableIfExists('patients');
};
