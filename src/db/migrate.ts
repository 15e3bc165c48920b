import path from 'node:path';
import type { Knex } from 'knex';

/** Migrations live in the top-level `migrations/` folder as plain CommonJS (runnable from src and dist). */
export const MIGRATIONS_DIR = path.resolve(__dirname, '../../migrations');

const migrationConfig: Knex.MigratorConfig = {
  directory: MIGRATIONS_DIR,
  loadExtensions: ['.js'],
  tableName: 'knex_migrations',
};

/** Brings the schema to the latest version known to this build. */
export async function runMigrations(knex: Knex): Promise<string[]> {
  const [, applied] = (await knex.migrate.latest(migrationConfig)) as [number, string[]];
  return applied;
}

/** Error raised when the database schema is not the one this build serves. */
export class SchemaVersionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SchemaVersionError';
  }
}

/**
 * Refuses a schema this build does not know (STYLE 9): migrations applied that are not in
 * `migrations/` (a newer server ran), or migrations still pending.
 */
export async function assertSchemaCurrent(knex: Knex): Promise<void> {
  if (!(await knex.schema.hasTable('knex_migrations'))) {
    throw new SchemaVersionError('database has no schema; run `imaging-lake migrate`');
  }
  const applied = new Set((await knex('knex_migrations').select('name')).map((r: { name: string }) => r.name));
  const localFiles = await listLocalMigrations();
  const unknown = [...applied].filter((n) => !localFiles.includes(n));
  if (unknown.length > 0) {
    throw new SchemaVersionError(`database schema is newer than this server (unknown migrations: ${unknown.join(', ')})`);
  }
  const pending = localFiles.filter((f) => !applied.has(f));
  if (pending.length > 0) {
    throw new SchemaVersionError(`database schema is behind (pending migrations: ${pending.join(', ')}); run \`imaging-lake migrate\``);
  }
}

async function listLocalMigrations(): Promise<string[]> {
  const fs = await import('node:fs/promises');
  return (await fs.readdir(MIGRATIONS_DIR)).filter((f) => f.endsWith('.js')).sort();
}
