import fs from 'node:fs/promises';
import path from 'node:path';
import { Client } from 'pg';
import { DROPPER_GLOBAL, type GlobalWithDropper } from './global-setup';
import { ADMIN_DATABASE_URL, TEMPLATE_DATABASE_ENV, TEMPLATE_EMBEDDED_DIR_ENV } from './test-env';

/** Jest global tear-down: drops the test databases still released and the migrated template that global-setup.ts made. */
export default async function globalTeardown(): Promise<void> {
  await (globalThis as GlobalWithDropper)[DROPPER_GLOBAL]?.stop();
  const name = process.env[TEMPLATE_DATABASE_ENV];
  if (name) {
    const admin = new Client({ connectionString: ADMIN_DATABASE_URL });
    await admin.connect();
    try {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    } finally {
      await admin.end();
    }
  }
  const dir = process.env[TEMPLATE_EMBEDDED_DIR_ENV];
  if (dir) await fs.rm(path.dirname(dir), { recursive: true, force: true });
}
