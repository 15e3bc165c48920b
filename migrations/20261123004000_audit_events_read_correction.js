/**
 * Lets the audit gate correct the AuditEvent of a read it wrote early, and nothing else.
 *
 * Reads (GET/HEAD) have their AuditEvent committed while the handler runs, with the success
 * outcome known at authorization (src/audit/audit-response.ts): the commit's WAL flush then
 * overlaps the work instead of following it. When the answer turns out otherwise (404, 400,
 * 5xx, a client that went away), the gate rewrites that same event before the answer leaves,
 * so the trail never keeps a success for a request that failed.
 *
 * The append-only trigger keeps refusing DELETE, TRUNCATE and every other UPDATE. An UPDATE
 * passes only when all of these hold:
 *   - the transaction named the row first: set_config('imaging_lake.audit_correction', <id>, true)
 *     (transaction-local, so it cannot leak to another statement of a pooled connection);
 *   - the row still records a success (outcome 0): a failure is final, and a row is corrected
 *     into a failure at most once;
 *   - the row is less than an hour old (the correction happens within its own request);
 *   - who, when and what kind stay as they were: id, recorded, type, subtype, action, the
 *     agents (columns and resource), the request id. Only the outcome and what the request
 *     touched (entities, patient, outcome description) may change.
 */

const STRICT = `CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
    END $$`;

const WITH_READ_CORRECTION = `CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'UPDATE' THEN
        IF current_setting('imaging_lake.audit_correction', true) = OLD.id::text
           AND OLD.outcome = '0'
           AND OLD.recorded > now() - interval '1 hour'
           AND NEW.id = OLD.id
           AND NEW.recorded = OLD.recorded
           AND NEW.type_code = OLD.type_code
           AND NEW.subtype_code IS NOT DISTINCT FROM OLD.subtype_code
           AND NEW.action IS NOT DISTINCT FROM OLD.action
           AND NEW.agent_subject IS NOT DISTINCT FROM OLD.agent_subject
           AND NEW.agent_client_id IS NOT DISTINCT FROM OLD.agent_client_id
           AND NEW.agent_role IS NOT DISTINCT FROM OLD.agent_role
           AND NEW.agent_address IS NOT DISTINCT FROM OLD.agent_address
           AND NEW.request_id IS NOT DISTINCT FROM OLD.request_id
           AND NEW.resource->'id' = OLD.resource->'id'
           AND NEW.resource->'recorded' = OLD.resource->'recorded'
           AND NEW.resource->'type' = OLD.resource->'type'
           AND NEW.resource->'subtype' IS NOT DISTINCT FROM OLD.resource->'subtype'
           AND NEW.resource->'action' IS NOT DISTINCT FROM OLD.resource->'action'
           AND NEW.resource->'agent' = OLD.resource->'agent'
           AND NEW.resource->'source' = OLD.resource->'source'
        THEN
          RETURN NEW;
        END IF;
      END IF;
      RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
    END $$`;

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.raw(WITH_READ_CORRECTION);
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex.raw(STRICT);
};
