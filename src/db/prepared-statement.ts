import { createHash } from 'node:crypto';
import type { Knex } from 'knex';

/**
 * Runs a fixed SQL text as a named prepared statement: each pooled PostgreSQL connection parses
 * it once and then only binds and executes it (PostgreSQL protocol 55.2.3, extended query), and
 * the server may keep its plan (PREPARE, plan_cache_mode). Meant for the statements every
 * STOW-RS request sends. The name is derived from the text, so two texts never share one; the
 * embedded engine prepares every text with parameters under a name of its own
 * (embedded-statements.ts) and ignores this one.
 */
export function preparedRaw(db: Knex | Knex.Transaction, sql: string, bindings: readonly Knex.RawBinding[]): Knex.Raw {
  return db.raw(sql, bindings as Knex.RawBinding[]).options({ name: statementName(sql) });
}

const names = new Map<string, string>();

function statementName(sql: string): string {
  let name = names.get(sql);
  if (name === undefined) {
    name = `il_${createHash('sha256').update(sql).digest('hex').slice(0, 24)}`;
    names.set(sql, name);
  }
  return name;
}

/** The two texts of a statement over a set of row keys: for one key, and for several. */
export interface KeyedStatement {
  one: string;
  many: string;
}

/**
 * Builds a statement whose `{keys}` placeholders match row keys: `= ?::bigint` for one key,
 * `= ANY(?::bigint[])` for several. PostgreSQL keeps a prepared statement's generic plan only
 * when its estimated cost is close to that of plans made for the actual values; an array
 * parameter is estimated at ten keys, so with ANY alone a one-key call (one instance, one
 * series, one study) would be planned anew on every execution.
 */
export function keyedStatement(sql: string): KeyedStatement {
  return { one: sql.replaceAll('{keys}', '= ?::bigint'), many: sql.replaceAll('{keys}', '= ANY(?::bigint[])') };
}

/** Whether every key set holds one key (use `one`, binding the key itself), else `many` with the arrays. */
export function singleKeys(...keySets: ReadonlyArray<readonly number[]>): boolean {
  return keySets.every((keys) => keys.length === 1);
}

/**
 * Runs a fixed statement (SQL with `?` placeholders, none inside a literal, no jsonb `?`
 * operator) as a named prepared statement straight on one node-postgres connection of knex's
 * pool, for the reads a viewer sends most often (a frame) and the writes of every STOW-RS
 * request. Besides what preparedRaw gives (parsed once per connection, a generic plan kept:
 * measured on the frame look-up, 0.35 ms of planning per request before, 0.01 ms after), it
 * skips knex's query compiler and runner. The rows are parsed by the same node-postgres type
 * parsers as through knex. In a transaction it runs on the transaction's own connection (the
 * statements of a STOW-RS index change: knex's compiler and runner cost about as much node CPU
 * as node-postgres itself per statement). The embedded engine (knex-pglite) takes the same text
 * through knex.raw, and its statement cache prepares it (embedded-statements.ts).
 */
export async function queryPrepared(db: Knex | Knex.Transaction, sql: string, values: readonly unknown[]): Promise<Array<Record<string, any>>> {
  const pool = pgConnectionPool<PgPool>(db);
  if (!pool) return ((await db.raw(sql, values as Knex.RawBinding[])) as { rows: Array<Record<string, any>> }).rows;
  // A connection that failed is marked by knex (its error listener) and not handed out again.
  const conn = await pool.acquireConnection();
  try {
    return (await conn.query({ name: statementName(sql), text: positionalText(sql), values: values as unknown[] })).rows;
  } finally {
    await pool.releaseConnection(conn);
  }
}

const positionalTexts = new Map<string, string>();

/** The text with `$1`, `$2`, ... for its `?` placeholders, as node-postgres takes it. */
function positionalText(sql: string): string {
  let text = positionalTexts.get(sql);
  if (text === undefined) {
    let n = 0;
    text = sql.replace(/\?/g, () => `$${++n}`);
    positionalTexts.set(sql, text);
  }
  return text;
}

/** One node-postgres connection as knex's pool hands it out. */
interface PgConnection {
  query(q: { name: string; text: string; values: unknown[] }): Promise<{ rows: Array<Record<string, unknown>> }>;
}

interface PgPool {
  acquireConnection(): Promise<PgConnection>;
  releaseConnection(conn: PgConnection): Promise<void> | void;
}

/**
 * knex's client when it is the node-postgres driver, whose connections take named statements;
 * undefined otherwise (the INSERT or query then goes through knex.raw). A transaction's client
 * hands out the transaction's own connection and its release is a no-op, so a statement run
 * this way stays inside the transaction. `Pool` is the caller's view of the client.
 */
export function pgConnectionPool<Pool extends { acquireConnection(): Promise<unknown> }>(db: Knex | Knex.Transaction): Pool | undefined {
  const client = db.client as ({ driverName?: string; config?: { client?: unknown }; acquireConnection?: unknown }) | undefined;
  // knex-pglite inherits driverName 'pg' but takes no named statements: only the configured 'pg' client qualifies.
  const pg = client?.driverName === 'pg' && client.config?.client === 'pg';
  return pg && typeof client.acquireConnection === 'function' ? (client as unknown as Pool) : undefined;
}
