/**
 * Studies whose FHIR ImagingStudy must be rewritten from the index. A STOW (or delete) marks a
 * study here in its own transaction instead of rewriting the whole ImagingStudy (every series
 * and instance) there: the rewrite is coalesced and done later in a transaction of its own
 * (src/fhir/dicom/imaging-study-flusher.ts), by a background flusher or before any FHIR request
 * that could read the ImagingStudy. A row committed here survives a crash; the flusher picks it
 * up on the next start. A study removed from the index takes its row with it.
 */

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.schema.createTable('imaging_study_pending', (t) => {
    t.bigInteger('study_pk').primary().references('studies.id').onDelete('CASCADE');
    // When the study first changed since its last rewrite: the flusher takes the oldest first.
    t.timestamp('since', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    // Bumped by every further change: a rewrite clears the mark only if no change came after what it read.
    t.bigInteger('gen').notNullable().defaultTo(0);
  });
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex.schema.dropTableIfExists('imaging_study_pending');
};
