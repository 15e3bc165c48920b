import { createHash } from 'node:crypto';
import type { Knex } from 'knex';

/**
 * Runs a fixed SQL text as a named prepared statement: each pooled PostgreSQL connection parses
 * it once and then only binds and executes it (PostgreSQL protocol 55.2.3, extended query), and
 * the server may keep its plan (PREPARE, plan_cache_mode). Meant for the statements every
 * STOW-RS request sends. The name is derived from the text, so two texts never share one; the
 * embedded engine ignores it.
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
