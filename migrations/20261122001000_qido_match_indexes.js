/**
 * QIDO-RS match keys: an index for every key of dicomweb/query-keys.json that the first
 * index migration did not cover, the paging order of study searches, and the words of
 * person names for fuzzy matching (stored generated tsvector columns: filled by PostgreSQL
 * itself on every insert or update, so ingest code needs no change).
 *
 * Text keys get text_pattern_ops indexes so that `LIKE 'abc%'` uses them under any
 * collation; times and datetimes are compared byte-wise (COLLATE "C") and indexed so.
 * Where the pg_trgm extension is available (PostgreSQL servers; not the embedded engine),
 * trigram indexes serve the infix wildcards that OHIF sends (`*smith*`).
 */

const TEXT_PATTERN_INDEXES = {
  studies: ['patient_id', 'accession_number', 'study_description', 'institution_name', 'issuer_of_patient_id', 'study_id', 'patient_sex'],
  series: ['series_description', 'body_part_examined', 'manufacturer', 'manufacturer_model_name', 'station_name'],
};
const PLAIN_INDEXES = {
  studies: ['patient_birth_date'],
  series: ['series_number', 'series_date', 'pps_start_date'],
  instances: ['instance_number', 'content_date'],
};
const C_COLLATED_INDEXES = {
  studies: ['study_time'],
  series: ['series_time', 'pps_start_time'],
  instances: ['content_time', 'acquisition_datetime'],
};
const TRIGRAM_INDEXES = { studies: ['patient_name_norm', 'patient_id', 'accession_number', 'study_description'] };

function rowsOf(result) {
  return Array.isArray(result) ? result : (result?.rows ?? []);
}

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.raw(`ALTER TABLE studies ADD COLUMN patient_name_words tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', translate(coalesce(patient_name_norm, ''), '^=', '  '))) STORED`);
  await knex.raw(`ALTER TABLE studies ADD COLUMN referring_physician_name_words tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', translate(lower(coalesce(referring_physician_name, '')), '^=', '  '))) STORED`);
  await knex.raw('CREATE INDEX studies_patient_name_words_idx ON studies USING gin (patient_name_words)');
  await knex.raw('CREATE INDEX studies_referring_physician_name_words_idx ON studies USING gin (referring_physician_name_words)');
  await knex.raw('CREATE INDEX studies_referring_physician_name_lower_idx ON studies (lower(referring_physician_name) text_pattern_ops)');
  await knex.raw('CREATE INDEX studies_sop_classes_idx ON studies USING gin (sop_classes)');
  // The order of study search results: newest first, unique by id.
  await knex.raw('CREATE INDEX studies_qido_order_idx ON studies (study_date DESC NULLS LAST, study_time DESC NULLS LAST, id DESC)');

  for (const [table, columns] of Object.entries(TEXT_PATTERN_INDEXES)) {
    for (const c of columns) await knex.raw(`CREATE INDEX ${table}_${c}_pattern_idx ON ${table} (${c} text_pattern_ops)`);
  }
  for (const [table, columns] of Object.entries(PLAIN_INDEXES)) {
    for (const c of columns) await knex.raw(`CREATE INDEX ${table}_${c}_qido_idx ON ${table} (${c})`);
  }
  for (const [table, columns] of Object.entries(C_COLLATED_INDEXES)) {
    for (const c of columns) await knex.raw(`CREATE INDEX ${table}_${c}_c_idx ON ${table} ((${c} COLLATE "C"))`);
  }

  if (rowsOf(await knex.raw(`SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'`)).length > 0) {
    // A server may list the extension yet refuse to create it (privileges): the indexes are an optimisation only.
    await knex.raw('SAVEPOINT qido_trgm');
    try {
      await knex.raw('CREATE EXTENSION IF NOT EXISTS pg_trgm');
      await knex.raw('RELEASE SAVEPOINT qido_trgm');
    } catch {
      await knex.raw('ROLLBACK TO SAVEPOINT qido_trgm');
    }
  }
  if (rowsOf(await knex.raw(`SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'`)).length > 0) {
    for (const [table, columns] of Object.entries(TRIGRAM_INDEXES)) {
      for (const c of columns) await knex.raw(`CREATE INDEX ${table}_${c}_trgm_idx ON ${table} USING gin (${c} gin_trgm_ops)`);
    }
  }
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  for (const [table, columns] of Object.entries(TRIGRAM_INDEXES)) {
    for (const c of columns) await knex.raw(`DROP INDEX IF EXISTS ${table}_${c}_trgm_idx`);
  }
  for (const [table, columns] of Object.entries(C_COLLATED_INDEXES)) {
    for (const c of columns) await knex.raw(`DROP INDEX IF EXISTS ${table}_${c}_c_idx`);
  }
  for (const [table, columns] of Object.entries(PLAIN_INDEXES)) {
    for (const c of columns) await knex.raw(`DROP INDEX IF EXISTS ${table}_${c}_qido_idx`);
  }
  for (const [table, columns] of Object.entries(TEXT_PATTERN_INDEXES)) {
    for (const c of columns) await knex.raw(`DROP INDEX IF EXISTS ${table}_${c}_pattern_idx`);
  }
  await knex.raw('DROP INDEX IF EXISTS studies_qido_order_idx');
  await knex.raw('DROP INDEX IF EXISTS studies_sop_classes_idx');
  await knex.raw('DROP INDEX IF EXISTS studies_referring_physician_name_lower_idx');
  await knex.raw('DROP INDEX IF EXISTS studies_referring_physician_name_words_idx');
  await knex.raw('DROP INDEX IF EXISTS studies_patient_name_words_idx');
  await knex.raw('ALTER TABLE studies DROP COLUMN IF EXISTS referring_physician_name_words');
  await knex.raw('ALTER TABLE studies DROP COLUMN IF EXISTS patient_name_words');
};
