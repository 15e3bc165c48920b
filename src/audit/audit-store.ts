/**
 * The durable audit trail: append-only rows in the partitioned `audit_events` table. There is
 * deliberately no delete function here, and the table's triggers refuse deletes and updates,
 * with one narrow exception: correctAuditEvent, which rewrites the outcome of a read's event
 * written early (before the answer was known), within the same request.
 */
import type { Knex } from 'knex';
import { auditIndexColumns, type AuditEvent } from './audit-event';
import { pgConnectionPool } from '../db/prepared-statement';

/** The audit trail could not be written: the access that caused it must fail. */
export class AuditWriteError extends Error {
  constructor(cause: unknown) {
    super(`audit trail unavailable: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = 'AuditWriteError';
  }
}

/** The columns of `audit_events`, in the order the INSERT lists them, with their types. */
/** The columns of an audit row, with their PostgreSQL types, in the order every INSERT writes them. */
export const ROW_COLUMNS: ReadonlyArray<[string, string]> = [
  ['id', 'uuid'],
  ['recorded', 'timestamptz'],
  ['type_code', 'text'],
  ['subtype_code', 'text'],
  ['action', 'text'],
  ['outcome', 'text'],
  ['agent_subject', 'text'],
  ['agent_client_id', 'text'],
  ['agent_role', 'text'],
  ['agent_address', 'text'],
  ['patient', 'text'],
  ['entity', 'text[]'],
  ['request_id', 'text'],
  ['projects', 'text[]'],
  ['resource', 'json'],
];
const COLUMN_LIST = ROW_COLUMNS.map(([name]) => name).join(', ');
/** Through knex (the embedded engine, transactions): all rows in one JSON parameter. */
const INSERT_ROWS_SQL = `INSERT INTO audit_events (${COLUMN_LIST}) SELECT ${COLUMN_LIST} FROM json_to_recordset(?::json) AS r(${ROW_COLUMNS.map(([n, t]) => `${n} ${t}`).join(', ')})`;

/**
 * On a node-postgres connection, batches of up to MAX_VALUES_ROWS rows: one typed parameter per
 * column, so PostgreSQL checks only the resource as JSON (measured: ~20% less backend CPU for a
 * one-row INSERT, ~40% per event at ~11 rows per INSERT, than unpacking JSON rows with
 * jsonb_to_recordset), as a named prepared statement per size (parsed and planned once per
 * connection). Larger batches use the prepared json_to_recordset statement: parsing and
 * planning a long VALUES list each time cost as much as it saved (measured at ~25 rows).
 */
function insertRowsStatement(count: number, once = false): { name: string; text: string } {
  const cache = once ? VALUES_ONCE_STATEMENTS : VALUES_STATEMENTS;
  let statement = cache[count];
  if (statement) return statement;
  const tuples: string[] = [];
  for (let r = 0; r < count; r++) tuples.push(`(${ROW_COLUMNS.map(([, type], c) => `$${r * ROW_COLUMNS.length + c + 1}::${type}`).join(', ')})`);
  statement = {
    name: `imaging_lake_audit_${once ? 'ship' : 'insert'}_${count}`,
    text: `INSERT INTO audit_events (${COLUMN_LIST}) VALUES ${tuples.join(', ')}${once ? ' ON CONFLICT (id, recorded) DO NOTHING' : ''}`,
  };
  cache[count] = statement;
  return statement;
}
const MAX_VALUES_ROWS = 16;
const VALUES_STATEMENTS: Array<{ name: string; text: string }> = [];
/**
 * Rows per statement when the outbox ships (a prepared statement per size, planned once per
 * connection: a shipper sends the same few sizes over and over, unlike request-sized batches).
 */
const SHIP_VALUES_ROWS = 64;
const VALUES_ONCE_STATEMENTS: Array<{ name: string; text: string }> = [];
const INSERT_JSON_ROWS_STATEMENT = { name: 'imaging_lake_audit_insert_json', text: INSERT_ROWS_SQL.replace('?', '$1') };

/** One node-postgres connection of knex's pool, as the prepared-statement path uses it. */
export interface AuditConnection {
  query(q: { name: string; text: string; values: unknown[] }): Promise<unknown>;
  /** Set by knex once the connection failed or ended: it must not be used again. */
  __knex__disposed?: unknown;
}

/** The parts of knex's pg client the prepared-statement path uses. */
export interface AuditConnectionPool {
  acquireConnection(): Promise<AuditConnection>;
  releaseConnection(conn: AuditConnection): Promise<void> | void;
}

/** knex's node-postgres client as the audit's prepared INSERTs use it (pgConnectionPool), else undefined. */
export function auditConnectionPool(knexOrTrx: Knex | Knex.Transaction): AuditConnectionPool | undefined {
  return pgConnectionPool<AuditConnectionPool>(knexOrTrx);
}

/** A JSON escape of U+0000 that is not itself an escaped backslash followed by `u0000`. */
const NUL_ESCAPE = /(?<!\\)((?:\\\\)*)\\u0000/g;

/**
 * One AuditEvent as the INSERT writes it: the index columns (in ROW_COLUMNS order, without the
 * resource) and the resource serialized exactly once, when the event is queued.
 */
export interface AuditRow {
  columns: Array<string | string[] | null>;
  resource: string;
}

/**
 * Serializes one AuditEvent into its row (index columns plus the resource's JSON text).
 * PostgreSQL text cannot hold U+0000 (nor jsonb, which the trail's correction rule casts the
 * resource to), so it becomes U+FFFD rather than making the write (and the access) fail.
 */
export function serializeAuditRow(event: AuditEvent): AuditRow {
  const json = JSON.stringify(event);
  const k = auditIndexColumns(event);
  return {
    columns: [event.id, event.recorded, k.type_code, k.subtype_code, k.action, k.outcome, k.agent_subject, k.agent_client_id, k.agent_role, k.agent_address, k.patient, k.entity, k.request_id, k.projects].map(withoutNul),
    resource: json.includes('\\u0000') ? json.replace(NUL_ESCAPE, '$1\\ufffd') : json,
  };
}

function withoutNul<T extends string | string[] | null>(value: T): T {
  if (typeof value === 'string') return (value.includes('\0') ? value.replaceAll('\0', '\ufffd') : value) as T;
  if (Array.isArray(value)) return value.map(withoutNul) as T;
  return value;
}

/**
 * Appends serialized rows (serializeAuditRow) with ONE statement: one round trip, and one
 * commit unless `knexOrTrx` is a transaction. Throws the database error as is.
 */
export async function insertAuditRows(knexOrTrx: Knex | Knex.Transaction, rows: readonly AuditRow[]): Promise<void> {
  if (rows.length === 0) return;
  const pool = auditConnectionPool(knexOrTrx);
  if (!pool) {
    await knexOrTrx.raw(INSERT_ROWS_SQL, [rowsJson(rows)]);
    return;
  }
  // A connection that failed is marked by knex and not handed out again.
  const conn = await pool.acquireConnection();
  try {
    await insertAuditRowsOn(conn, rows);
  } finally {
    await pool.releaseConnection(conn);
  }
}

/**
 * Appends serialized rows on one pooled connection with the prepared INSERT (its own commit).
 * Every request's AuditEvent passes here: a prepared statement spares PostgreSQL the parse and
 * plan of each INSERT, and Node knex's query pipeline (measured: ~40% less backend CPU per
 * one-row INSERT). Throws the database error as is.
 */
export async function insertAuditRowsOn(conn: AuditConnection, rows: readonly AuditRow[]): Promise<void> {
  if (rows.length === 0) return;
  if (rows.length > MAX_VALUES_ROWS) {
    await conn.query({ ...INSERT_JSON_ROWS_STATEMENT, values: [rowsJson(rows)] });
    return;
  }
  const values: unknown[] = [];
  for (const row of rows) values.push(...row.columns, row.resource);
  await conn.query({ ...insertRowsStatement(rows.length), values });
}

/** The rows as one JSON array of objects keyed by column (for json_to_recordset). */
function rowsJson(rows: readonly AuditRow[]): string {
  const objects = rows.map((row) => {
    const keyed: Record<string, unknown> = {};
    row.columns.forEach((value, c) => (keyed[ROW_COLUMNS[c][0]] = value));
    // The resource text is spliced in as is: it was stringified once already.
    return `${JSON.stringify(keyed).slice(0, -1)},"resource":${row.resource}}`;
  });
  return `[${objects.join(',')}]`;
}

/** Rewrites an early-written read event: its outcome and what it touched (the trigger allows nothing else). */
const CORRECT_ROW_SQL = `UPDATE audit_events AS a SET outcome = r.outcome, patient = r.patient, entity = r.entity, resource = r.resource
  FROM json_to_record(?::json) AS r(id uuid, recorded timestamptz, outcome text, patient text, entity text[], resource json)
  WHERE a.id = r.id AND a.recorded = r.recorded RETURNING a.id`;

/**
 * The same correction as ONE statement (one round trip, its own implicit transaction) for a
 * node-postgres connection: the row is named by set_config(..., true) in a subquery of the
 * UPDATE's FROM list, which is evaluated before any row reaches the append-only trigger, and the
 * setting ends with the statement's transaction like with BEGIN ... COMMIT.
 */
const CORRECT_ROW_STATEMENT = {
  name: 'imaging_lake_audit_correct',
  text: `UPDATE audit_events AS a SET outcome = r.outcome, patient = r.patient, entity = r.entity, resource = r.resource
  FROM json_to_record($1::json) AS r(id uuid, recorded timestamptz, outcome text, patient text, entity text[], resource json),
    (SELECT set_config('imaging_lake.audit_correction', $2, true) AS named) AS c
  WHERE a.id = r.id AND a.recorded = r.recorded AND c.named = $2 RETURNING a.id`,
};

/**
 * Corrects the AuditEvent of a read that was committed early with the outcome expected at
 * authorization (audit-response.ts), once the answer turned out otherwise: same id, same
 * recorded time, same agents; the new outcome and entities. One transaction that names the row
 * (the append-only trigger lets exactly that row be corrected, once, and only from a success;
 * migrations/20261123004000_audit_events_read_correction.js): on `conn`, a pooled node-postgres
 * connection, one statement; otherwise BEGIN, set_config, UPDATE, COMMIT through knex.
 * Throws AuditWriteError.
 */
export async function correctAuditEvent(knex: Knex, event: AuditEvent, conn?: AuditConnection): Promise<void> {
  if (conn) {
    try {
      const result = (await conn.query({ ...CORRECT_ROW_STATEMENT, values: [rowsJson([serializeAuditRow(event)]).slice(1, -1), event.id] })) as { rowCount?: number | null };
      if (result?.rowCount !== 1) throw new Error(`AuditEvent ${event.id} to correct was not found`);
    } catch (err) {
      throw err instanceof AuditWriteError ? err : new AuditWriteError(err);
    }
    return;
  }
  try {
    const row = rowsJson([serializeAuditRow(event)]).slice(1, -1);
    await knex.transaction(async (trx) => {
      await trx.raw(`SELECT set_config('imaging_lake.audit_correction', ?, true)`, [event.id]);
      const result = await trx.raw(CORRECT_ROW_SQL, [row]);
      const rows = Array.isArray(result) ? result : (result?.rows ?? []);
      if (rows.length !== 1) throw new Error(`AuditEvent ${event.id} to correct was not found`);
    });
  } catch (err) {
    throw err instanceof AuditWriteError ? err : new AuditWriteError(err);
  }
}

/**
 * Appends rows that may already be in the trail (a durable outbox shipping again what it may
 * have shipped before a crash): one statement, rows whose (id, recorded) exists are skipped.
 */
export async function insertAuditRowsOnce(knex: Knex, rows: readonly AuditRow[]): Promise<void> {
  if (rows.length === 0) return;
  const pool = auditConnectionPool(knex);
  if (!pool) {
    await knex.raw(`${INSERT_ROWS_SQL} ON CONFLICT (id, recorded) DO NOTHING`, [rowsJson(rows)]);
    return;
  }
  // node-postgres: typed parameters (PostgreSQL parses each resource once, not as JSON rows and
  // then again as json), prepared per size, several statements in one transaction (one commit).
  const conn = await pool.acquireConnection();
  const run = (text: string) => conn.query({ name: '', text, values: [] });
  const several = rows.length > SHIP_VALUES_ROWS;
  try {
    if (several) await run('BEGIN');
    for (let i = 0; i < rows.length; i += SHIP_VALUES_ROWS) {
      const chunk = rows.slice(i, i + SHIP_VALUES_ROWS);
      const values: unknown[] = [];
      for (const row of chunk) values.push(...row.columns, row.resource);
      await conn.query({ ...insertRowsStatement(chunk.length, true), values });
    }
    if (several) await run('COMMIT');
  } catch (err) {
    if (several) await run('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    await pool.releaseConnection(conn);
  }
}

/**
 * Applies the correction of an early-written read event (correctAuditEvent's rule) unless it was
 * applied already: the UPDATE touches the row only while its outcome is still the success it was
 * written with, so shipping the same correction twice changes nothing the second time.
 * Resolves whether a row changed; throws the database error as is.
 */
export async function applyAuditCorrectionOnce(knex: Knex, row: AuditRow): Promise<boolean> {
  const id = row.columns[0] as string;
  return knex.transaction(async (trx) => {
    await trx.raw(`SELECT set_config('imaging_lake.audit_correction', ?, true)`, [id]);
    const result = await trx.raw(`${CORRECT_ROW_SQL.replace(' RETURNING a.id', '')} AND a.outcome = '0' AND a.resource::jsonb IS DISTINCT FROM r.resource::jsonb RETURNING a.id`, [rowsJson([row]).slice(1, -1)]);
    const rows = Array.isArray(result) ? result : (result?.rows ?? []);
    return rows.length > 0;
  });
}

/**
 * Appends one AuditEvent. Pass the transaction of the change it records so both commit or
 * neither does; throws AuditWriteError (callers turn it into a failed request). Requests that
 * write nothing else go through the group-commit writer (audit-writer.ts) instead.
 */
export async function writeAuditEvent(knexOrTrx: Knex | Knex.Transaction, event: AuditEvent): Promise<void> {
  try {
    await insertAuditRows(knexOrTrx, [serializeAuditRow(event)]);
  } catch (err) {
    throw new AuditWriteError(err);
  }
}

/** An AuditEvent's one-row INSERT for a caller to run inside its own statement (as a WITH query). */
export interface AuditInsert {
  /** `INSERT INTO audit_events ... RETURNING 1`, with `?` placeholders. */
  sql: string;
  values: unknown[];
}

/** Typed placeholders: the same one-row INSERT as the prepared statement, one parameter per column. */
const INSERT_ONE_SQL = `INSERT INTO audit_events (${COLUMN_LIST}) VALUES (${ROW_COLUMNS.map(([, type]) => `?::${type}`).join(', ')}) RETURNING 1`;

/**
 * The INSERT of one AuditEvent, for a write that sends it within its own first statement in the
 * transaction of the change it records (one round trip less than writeAuditEvent there). A
 * failure of that statement caused by the audit table is reported by isAuditWriteFailure.
 */
export function auditInsertFor(event: AuditEvent): AuditInsert {
  const row = serializeAuditRow(event);
  return { sql: INSERT_ONE_SQL, values: [...row.columns, row.resource] };
}

/**
 * Several auditInsertFor INSERTs as ONE statement of the same rows (json_to_recordset: one text
 * whatever their number), for a transaction recording several requests (STOW-RS group commit).
 */
export function auditInsertsAsOne(inserts: readonly AuditInsert[]): AuditInsert {
  const rows = inserts.map((insert): AuditRow => {
    if (insert.sql !== INSERT_ONE_SQL) throw new Error('auditInsertsAsOne takes only INSERTs made by auditInsertFor');
    return { columns: insert.values.slice(0, -1) as AuditRow['columns'], resource: insert.values[insert.values.length - 1] as string };
  });
  return { sql: INSERT_ROWS_SQL, values: [rowsJson(rows)] };
}

/**
 * Whether a database error of a statement that carried an auditInsertFor INSERT came from the audit
 * table: PostgreSQL names it in the error's table field, or quoted in its message ("no partition of
 * relation "audit_events" ..."). knex puts the statement's own text ahead of the message, and that
 * text names audit_events unquoted whatever failed, so the bare name is not evidence.
 */
export function isAuditWriteFailure(err: unknown): boolean {
  const e = err as { table?: unknown; message?: unknown } | null;
  return (typeof e?.table === 'string' && e.table.startsWith('audit_events')) || (typeof e?.message === 'string' && e.message.includes('"audit_events'));
}

/** Search keys over the audit trail (FHIR R4 AuditEvent search parameters by the same names). */
export interface AuditSearchParams {
  /** recorded >= since (inclusive). */
  since?: Date | string;
  /** recorded < until (exclusive). */
  until?: Date | string;
  /** `Patient/123`. */
  patient?: string;
  /** The acting user or client (`sub`). */
  agent?: string;
  /** Not indexed (no FHIR AuditEvent search parameter maps to it): bound the search by date. */
  clientId?: string;
  /** `rest`, `110104`, `110112`, `110105`, `110114`. */
  type?: string;
  /** `read`, `search-type`, `create`, ... or a DICOM subtype code. */
  subtype?: string;
  /** A resource reference (`ImagingStudy/abc`) or a Study Instance UID. */
  entity?: string;
  action?: 'C' | 'R' | 'U' | 'D' | 'E';
  outcome?: string;
  /** Not indexed (no FHIR AuditEvent search parameter maps to it): bound the search by date. */
  requestId?: string;
  /** Only accesses made within these projects (every project of the access among them). */
  withinProjects?: readonly string[];
  /** Page size (default 50, at most 1000). */
  count?: number;
  /** Continue after this cursor (from the previous page's `next`). */
  cursor?: string;
}

/** One page of results, newest first. */
export interface AuditSearchPage {
  events: AuditEvent[];
  /** Cursor for the next (older) page, absent on the last page. */
  next?: string;
}

/** Reads AuditEvents (for `GET /fhir/AuditEvent`): indexed keys only, newest first, keyset paging. */
export async function searchAuditEvents(knex: Knex, params: AuditSearchParams = {}): Promise<AuditSearchPage> {
  const count = Math.min(Math.max(Math.trunc(params.count ?? 50), 1), 1000);
  const q = whereAuditMatches(knex('audit_events').select('id', 'recorded', 'resource'), params);
  if (params.cursor) {
    const c = decodeCursor(params.cursor);
    q.whereRaw('(recorded, id) < (?::timestamptz, ?::uuid)', [c.recorded, c.id]);
  }
  const rows = (await q.orderBy([{ column: 'recorded', order: 'desc' }, { column: 'id', order: 'desc' }]).limit(count + 1)) as Array<{
    id: string;
    recorded: Date | string;
    resource: AuditEvent | string;
  }>;
  const page = rows.slice(0, count);
  const events = page.map((r) => (typeof r.resource === 'string' ? (JSON.parse(r.resource) as AuditEvent) : r.resource));
  const last = page[page.length - 1];
  return { events, next: rows.length > count && last ? encodeCursor(toDate(last.recorded).toISOString(), last.id) : undefined };
}

/** How many events match `params` (the cursor and count are ignored): `_total=accurate` and `_summary=count`. */
export async function countAuditEvents(knex: Knex, params: AuditSearchParams = {}): Promise<number> {
  const row = (await whereAuditMatches(knex('audit_events'), params).count<{ n: string | number }[]>({ n: '*' }))[0];
  return Number(row?.n ?? 0);
}

function whereAuditMatches(q: Knex.QueryBuilder, params: AuditSearchParams): Knex.QueryBuilder {
  if (params.since) q.where('recorded', '>=', toDate(params.since));
  if (params.until) q.where('recorded', '<', toDate(params.until));
  if (params.patient) q.where('patient', params.patient);
  if (params.agent) q.where('agent_subject', params.agent);
  if (params.clientId) q.where('agent_client_id', params.clientId);
  if (params.type) q.where('type_code', params.type);
  if (params.subtype) q.where('subtype_code', params.subtype);
  // The GIN index on entity is partial (rows naming no entity are not in it): repeat its predicate.
  if (params.entity) q.whereRaw(`entity @> ARRAY[?]::text[] AND entity <> '{}'`, [params.entity]);
  if (params.action) q.where('action', params.action);
  if (params.outcome) q.where('outcome', params.outcome);
  if (params.requestId) q.where('request_id', params.requestId);
  // A PI's search: accesses made within its projects only (all of the access's projects among them).
  if (params.withinProjects) q.whereRaw('projects <@ ?::text[] AND cardinality(projects) > 0', [[...params.withinProjects]]);
  return q;
}

/** Reads one AuditEvent by id (undefined when unknown). */
export async function readAuditEvent(knex: Knex, id: string): Promise<AuditEvent | undefined> {
  if (!/^[0-9a-f-]{36}$/i.test(id)) return undefined;
  const row = await knex('audit_events').where({ id }).first('resource');
  if (!row) return undefined;
  return typeof row.resource === 'string' ? JSON.parse(row.resource) : row.resource;
}

/**
 * Creates the monthly partitions for this month and the next `monthsAhead` (idempotent; a
 * no-op on an unpartitioned table). Call at start-up and daily.
 */
export async function ensureAuditPartitions(knex: Knex, monthsAhead = 2, now: Date = new Date()): Promise<string[]> {
  const created: string[] = [];
  for (let i = 0; i <= monthsAhead; i++) {
    const day = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + i, 1));
    const iso = day.toISOString().slice(0, 10);
    const result = await knex.raw('SELECT audit_events_ensure_partition(?::date) AS created', [iso]);
    const row = (Array.isArray(result) ? result : result.rows)[0];
    if (row?.created) created.push(`audit_events_${iso.slice(0, 7).replace('-', '_')}`);
  }
  return created;
}

function toDate(v: Date | string): Date {
  const d = v instanceof Date ? v : new Date(v);
  if (Number.isNaN(d.getTime())) throw new Error(`not a date: ${String(v)}`);
  return d;
}

function encodeCursor(recorded: string, id: string): string {
  return Buffer.from(`${recorded}|${id}`, 'utf8').toString('base64url');
}

function decodeCursor(cursor: string): { recorded: string; id: string } {
  const [recorded, id] = Buffer.from(cursor, 'base64url').toString('utf8').split('|');
  if (!recorded || !id || Number.isNaN(Date.parse(recorded)) || !/^[0-9a-f-]{36}$/i.test(id)) throw new Error('invalid audit cursor');
  return { recorded, id };
}

/** A running partition maintainer. */
export interface AuditPartitionMaintainer {
  /** Stops the schedule; resolves once a run in progress has finished (before its pool may close). */
  stop(): Promise<void>;
}

/**
 * Creates upcoming monthly partitions now and then every `intervalMs` (default 6 h), logging
 * failures without throwing: rows still land in the DEFAULT partition meanwhile. `stop` waits for
 * a run in progress: a pool closed under a waiting query does not fail it, so the run would wait
 * out the pool's acquire timeout and report (through knex and the logger) after the shutdown.
 */
export function startAuditPartitionMaintenance(knex: Knex, logger: { info: (o: object, m: string) => void; error: (o: object, m: string) => void }, intervalMs = 6 * 3600_000): AuditPartitionMaintainer {
  let running: Promise<void> = Promise.resolve();
  const run = () => {
    running = ensureAuditPartitions(knex).then(
      (created) => {
        if (created.length > 0) logger.info({ created }, 'audit partitions created');
      },
      (err: unknown) => logger.error({ err }, 'audit partition maintenance failed'),
    );
  };
  run();
  const timer = setInterval(run, intervalMs);
  timer.unref();
  return {
    stop: () => {
      clearInterval(timer);
      return running;
    },
  };
}
