/**
 * Links the DICOM index to the FHIR resources derived from it: the Patient a DICOM patient
 * resolves to and the ImagingStudy that mirrors each study (written in the ingest transaction).
 */

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.schema.alterTable('patients', (t) => {
    t.text('fhir_id').unique();
  });
  await knex.schema.alterTable('studies', (t) => {
    t.text('fhir_id').unique();
  });
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex.schema.alterTable('studies', (t) => {
    t.dropColumn('fhir_id');
  });
  await knex.schema.alterTable('patients', (t) => {
    t.dropColumn('fhir_id');
  });
};
