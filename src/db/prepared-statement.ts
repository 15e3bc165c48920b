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
