/**
 * The audit trail: one row per FHIR AuditEvent (IHE BALP shaped), append-only.
 *
 * - Declarative range partitioning by month on `recorded` (PostgreSQL 11+; also works on the
 *   embedded PGlite engine). A DEFAULT partition catches rows of months whose partition has
 *   not been created yet, so an insert never fails for want of a partition;
 *   `audit_events_ensure_partition(date)` creates monthly partitions ahead of time and the
 *   server calls it at start-up and daily. Old months can be detached or dropped whole for
 *   retention (DDL, not an API).
 * - If the engine refuses partitioning, the same table is created unpartitioned (same
 *   columns, indexes and triggers), and the partition function becomes a no-op.
 * - Narrow typed columns for the search keys (recorded, patient, agent, type/subtype, entity,
 *   request id); the full resource as JSONB.
 * - Triggers refuse UPDATE, DELETE and TRUNCATE: the rows are evidence.
 */

const COLUMNS = `
  id uuid NOT NULL,
  recorded timestamptz NOT NULL,
  type_code text NOT NULL,
  subtype_code text,
  action text,
  outcome text NOT NULL,
  agent_subject text,
  agent_client_id text,
  agent_role text,
  agent_address text,
  patient text,
  entity text[] NOT NULL DEFAULT '{}',
  request_id text,
  resource jsonb NOT NULL,
  PRIMARY KEY (id, recorded)`;

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  let partitioned = true;
  await knex.raw('SAVEPOINT audit_partitioning');
  try {
    await knex.raw(`CREATE TABLE audit_events (${COLUMNS}) PARTITION BY RANGE (recorded)`);
    await knex.raw('CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT');
    await knex.raw('RELEASE SAVEPOINT audit_partitioning');
  } catch {
    await knex.raw('ROLLBACK TO SAVEPOINT audit_partitioning');
    partitioned = false;
    await knex.raw(`CREATE TABLE audit_events (${COLUMNS})`);
  }

  await knex.raw('CREATE INDEX audit_events_recorded_idx ON audit_events (recorded)');
  await knex.raw('CREATE INDEX audit_events_patient_idx ON audit_events (patient, recorded) WHERE patient IS NOT NULL');
  await knex.raw('CREATE INDEX audit_events_agent_idx ON audit_events (agent_subject, recorded)');
  await knex.raw('CREATE INDEX audit_events_client_idx ON audit_events (agent_client_id, recorded) WHERE agent_client_id IS NOT NULL');
  await knex.raw('CREATE INDEX audit_events_type_idx ON audit_events (type_code, subtype_code, recorded)');
  await knex.raw('CREATE INDEX audit_events_entity_idx ON audit_events USING gin (entity)');
  await knex.raw('CREATE INDEX audit_events_request_idx ON audit_events (request_id) WHERE request_id IS NOT NULL');

  await knex.raw(`CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
    END $$`);
  await knex.raw(`CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()`);
  await knex.raw(`CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()`);

  // Creates the partition of the month containing p_day (UTC) unless it exists; true when created.
  await knex.raw(`CREATE FUNCTION audit_events_ensure_partition(p_day date) RETURNS boolean LANGUAGE plpgsql AS $$
    DECLARE
      first_day date := date_trunc('month', p_day)::date;
      part text := 'audit_events_' || to_char(first_day, 'YYYY_MM');
    BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'audit_events'::regclass) THEN
        RETURN false;
      END IF;
      IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
      END IF;
      EXECUTE format('CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
        part, first_day::text || ' 00:00:00+00', (first_day + interval '1 month')::date::text || ' 00:00:00+00');
      RETURN true;
    EXCEPTION WHEN duplicate_table THEN
      RETURN false;
    END $$`);
  if (partitioned) {
    for (let i = 0; i < 3; i++) {
      await knex.raw(`SELECT audit_events_ensure_partition(((now() AT TIME ZONE 'UTC')::date + make_interval(months => ?))::date)`, [i]);
    }
  }
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex.raw('DROP TABLE IF EXISTS audit_events CASCADE');
  await knex.raw('DROP FUNCTION IF EXISTS audit_events_ensure_partition(date)');
  await knex.raw('DROP FUNCTION IF EXISTS audit_events_append_only()');
};
