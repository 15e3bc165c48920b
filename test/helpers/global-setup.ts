import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Client } from 'pg';
import knexFactory from 'knex';
import pino from 'pino';
import { createDatabase } from '../../src/db/database';
import { runMigrations } from '../../src/db/migrate';
import { startDatabaseDropper } from './database-dropper';
import { ADMIN_DATABASE_URL, TEMPLATE_DATABASE_ENV, TEMPLATE_EMBEDDED_DIR_ENV, TEST_RUN_ENV, testDbKind } from './test-env';

/**
 * Jest global set-up: migrates one schema per run, which every test app then copies instead of
 * migrating its own (PostgreSQL: `CREATE DATABASE ... TEMPLATE`, a file copy; the embedded engine:
 * a copy of a migrated data directory, which also skips initdb). Names are random, so runs on the
 * same PostgreSQL server do not meet. Tests that start on an empty database (first start migrates,
 * first embedded start runs initdb) still ask for one explicitly.
 *
 * On PostgreSQL it also starts the dropper of released test databases (database-dropper.ts),
 * which global-teardown.ts stops; jest hands globals set here to the tear-down.
 */
export default async function globalSetup(): Promise<void> {
  if (testDbKind() === 'postgres') {
    const runId = randomBytes(4).toString('hex');
    const name = `il_template_${runId}`;
    const admin = new Client({ connectionString: ADMIN_DATABASE_URL });
    await admin.connect();
    try {
      await admin.query(`CREATE DATABASE ${name}`);
    } finally {
      await admin.end();
    }
    const knex = knexFactory({ client: 'pg', connection: ADMIN_DATABASE_URL.replace(/\/[^/]*$/, `/${name}`), pool: { min: 0, max: 1 } });
    try {
      await runMigrations(knex);
    } finally {
      // A template must have no open connections when it is copied.
      await knex.destroy();
    }
    process.env[TEMPLATE_DATABASE_ENV] = name;
    process.env[TEST_RUN_ENV] = runId;
    (globalThis as GlobalWithDropper)[DROPPER_GLOBAL] = startDatabaseDropper(runId);
  } else {
    const root = await fs.mkdtemp(path.join(os.tmpdir(), 'il-template-'));
    const db = createDatabase({ kind: 'embedded', dir: path.join(root, 'pg') }, pino({ level: 'silent' }));
    try {
      await runMigrations(db.knex);
    } finally {
      await db.close();
    }
    process.env[TEMPLATE_EMBEDDED_DIR_ENV] = path.join(root, 'pg');
  }
}

/** Where the tear-down finds the dropper. */
export const DROPPER_GLOBAL = '__imagingLakeTestDatabaseDropper';
export type GlobalWithDropper = typeof globalThis & { [DROPPER_GLOBAL]?: ReturnType<typeof startDatabaseDropper> };
