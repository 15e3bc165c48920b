import type { Knex } from 'knex';

/** Runs one SQL statement with positional `?` bindings and returns its rows. */
export async function queryRows<T = Record<string, any>>(db: Knex | Knex.Transaction, sql: string, bindings: readonly unknown[]): Promise<T[]> {
  const result = await db.raw(sql, bindings as readonly Knex.RawBinding[]);
  return (result?.rows ?? []) as T[];
}
