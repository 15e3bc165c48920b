/** Which backends the suite runs on, and where the migrated schema of this run lives (global-setup.ts). */

export const ADMIN_DATABASE_URL = process.env.TEST_ADMIN_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** Environment variable naming this run's migrated PostgreSQL template database. */
export const TEMPLATE_DATABASE_ENV = 'IL_TEST_TEMPLATE_DATABASE';

/** Environment variable naming this run's migrated embedded data directory. */
export const TEMPLATE_EMBEDDED_DIR_ENV = 'IL_TEST_TEMPLATE_EMBEDDED_DIR';

/** Which database the suite runs on. */
export function testDbKind(): 'postgres' | 'embedded' {
  return process.env.TEST_DB === 'embedded' ? 'embedded' : 'postgres';
}

/** Which blob store the suite runs on. */
export function testBlobKind(): 'fs' | 's3' {
  return process.env.TEST_BLOBS === 's3' ? 's3' : 'fs';
}

/** Environment variable holding this run's id: names of the databases it creates and releases start with it. */
export const TEST_RUN_ENV = 'IL_TEST_RUN';

/** Prefix of the names a released database of this run gets (renamed, dropped in the background by global-setup.ts). */
export function releasedDatabasePrefix(runId: string): string {
  return `il_drop_${runId}_`;
}
