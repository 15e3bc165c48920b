/**
 * Narrows the audit trail's indexes to the ones GET /fhir/AuditEvent uses. Every AuditEvent is
 * inserted before its request is answered, so each index is paid on every access.
 *
 * Kept (each serves a search parameter of src/fhir/resources/audit-event-search.ts):
 *   - primary key (id, recorded)                  _id and reads by id (and partition uniqueness)
 *   - audit_events_recorded_idx (recorded)        date / _lastUpdated, and the newest-first order
 *   - audit_events_patient_idx (patient, recorded) patient
 *   - audit_events_agent_idx (agent_subject, ...)  agent
 *   - audit_events_type_idx (type_code, subtype_code, recorded) type, type + subtype
 *   - audit_events_entity_idx GIN (entity)         entity; rebuilt PARTIAL (WHERE entity <> '{}'):
 *     searches, logins and anonymous attempts name no entity, and a GIN index keeps all those
 *     rows under one "empty" key that every such insert had to update (measured: the GIN was
 *     the largest single cost of the audit INSERT). searchAuditEvents adds the same predicate.
 * Dropped (no AuditEvent search parameter reaches them; outcome and action are not selective
 * enough to index):
 *   - audit_events_client_idx (agent_client_id)   the FHIR `agent` parameter matches the
 *     requestor (agent_subject); nothing searches by client id
 *   - audit_events_request_idx (request_id)       no FHIR search parameter maps to the request
 *     id; the column stays for support look-ups over a bounded date range
 * On a partitioned table, dropping the parent index drops the partitions' indexes with it.
 */

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.raw('DROP INDEX IF EXISTS audit_events_client_idx');
  await knex.raw('DROP INDEX IF EXISTS audit_events_request_idx');
  await knex.raw('DROP INDEX IF EXISTS audit_events_entity_idx');
  await knex.raw(`CREATE INDEX audit_events_entity_idx ON audit_events USING gin (entity) WHERE entity <> '{}'`);
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex.raw('DROP INDEX IF EXISTS audit_events_entity_idx');
  await knex.raw('CREATE INDEX audit_events_entity_idx ON audit_events USING gin (entity)');
  await knex.raw('CREATE INDEX IF NOT EXISTS audit_events_client_idx ON audit_events (agent_client_id, recorded) WHERE agent_client_id IS NOT NULL');
  await knex.raw('CREATE INDEX IF NOT EXISTS audit_events_request_idx ON audit_events (request_id) WHERE request_id IS NOT NULL');
};
