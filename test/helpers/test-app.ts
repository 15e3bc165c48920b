import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Client } from 'pg';
import knexFactory from 'knex';
import { runMigrations } from '../../src/db/migrate';
import express, { type Express } from 'express';
import { mintLocalToken } from '../../src/auth/local-token';
import type { Role } from '../../src/auth/roles';
import pino from 'pino';
import { createApp, shutdownApp, type AppHandle } from '../../src/app';
import { loadConfig, type AppConfig } from '../../src/config';
import { startS3Server } from './s3-server';
import { ADMIN_DATABASE_URL, TEMPLATE_DATABASE_ENV, TEMPLATE_EMBEDDED_DIR_ENV, TEST_RUN_ENV, releasedDatabasePrefix, testBlobKind, testDbKind } from './test-env';

/**
 * Builds a real server for integration tests: PostgreSQL (a fresh database on the machine's
 * server) or the embedded engine, and the filesystem or an S3-protocol server (s3rver over
 * HTTP). The combination comes from TEST_DB (postgres|embedded) and TEST_BLOBS (fs|s3), so
 * CI runs the same suite over each.
 */
export interface TestApp {
  app: AppHandle;
  /**
   * The app as an admin client calls it: requests without an Authorization header get the
   * admin token. Use `app.express` for anonymous requests and `token()` for other roles.
   */
  http: Express;
  adminToken: string;
  /** Mints a bearer token from the app's local issuer. */
  token(role: Role, projects?: string[], scope?: string): Promise<string>;
  /** A token of a named subject (a person the test tells apart from others). */
  tokenOf(subject: string, role: Role, projects?: string[]): Promise<string>;
  config: AppConfig;
  dataDir: string;
  databaseUrl?: string;
  s3?: Awaited<ReturnType<typeof startS3Server>>;
  close(): Promise<void>;
}

export { ADMIN_DATABASE_URL, testBlobKind, testDbKind };

/**
 * Creates a PostgreSQL database with a random name and returns its URL: empty, or with
 * `migrated`, a copy of this run's migrated template (global-setup.ts) when there is one.
 */
export async function createTestDatabase(options: { migrated?: boolean } = {}): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `il_test_${randomBytes(6).toString('hex')}`;
  const template = options.migrated ? process.env[TEMPLATE_DATABASE_ENV] : undefined;
  const admin = new Client({ connectionString: ADMIN_DATABASE_URL });
  await admin.connect();
  try {
    await admin.query(template ? `CREATE DATABASE ${name} TEMPLATE ${template}` : `CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = ADMIN_DATABASE_URL.replace(/\/[^/]*$/, `/${name}`);
  // Runs on the embedded engine (TEST_DB=embedded) make no migrated template: migrate this one.
  if (options.migrated && !template) {
    const knex = knexFactory({ client: 'pg', connection: url, pool: { min: 0, max: 1 } });
    try {
      await runMigrations(knex);
    } finally {
      await knex.destroy();
    }
  }
  return {
    url,
    async drop() {
      const c = new Client({ connectionString: ADMIN_DATABASE_URL });
      await c.connect();
      try {
        await releaseOrDrop(c, name);
      } finally {
        await c.end();
      }
    },
  };
}

/**
 * Takes a test database out of use. Within a jest run it is renamed for the run's background
 * dropper (global-setup.ts), since DROP DATABASE waits for a server-wide checkpoint; a database
 * still in use (the rename is refused) or outside a run is dropped here.
 */
async function releaseOrDrop(admin: Client, name: string): Promise<void> {
  const runId = process.env[TEST_RUN_ENV];
  if (runId) {
    try {
      await admin.query(`ALTER DATABASE ${name} RENAME TO ${releasedDatabasePrefix(runId)}${name}`);
      return;
    } catch {
      // sessions still open on it: drop it now
    }
  }
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
}

/**
 * Gives a fresh DATA_DIR the embedded engine's files already migrated (a copy of this run's
 * template, when there is one), so the app skips initdb and the migrations.
 */
export async function seedEmbeddedDataDir(dataDir: string): Promise<void> {
  const template = process.env[TEMPLATE_EMBEDDED_DIR_ENV];
  if (template) await fs.cp(template, path.join(dataDir, 'pg'), { recursive: true });
}

/** Starts a fully composed app on the configured backends with fresh, isolated storage. */
export async function startTestApp(overrides: Record<string, string> = {}): Promise<TestApp> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'il-test-'));
  const env: Record<string, string> = { DATA_DIR: dataDir, LOG_LEVEL: 'silent', SWEEP_INTERVAL_SECONDS: '0', ...overrides };
  let database: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
  if (testDbKind() === 'postgres' && !overrides.DATABASE_URL) {
    database = await createTestDatabase({ migrated: true });
    env.DATABASE_URL = database.url;
  } else if (testDbKind() === 'embedded' && !overrides.DATABASE_URL && !overrides.DATA_DIR) {
    await seedEmbeddedDataDir(dataDir);
  }
  let s3: TestApp['s3'];
  if (testBlobKind() === 's3' && !overrides.S3_BUCKET) {
    s3 = await startS3Server();
    Object.assign(env, {
      S3_BUCKET: s3.bucket,
      S3_ENDPOINT: s3.endpoint,
      S3_FORCE_PATH_STYLE: 'true',
      S3_REGION: 'us-east-1',
    });
    process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
  }
  const config = loadConfig(env);
  const app = await createApp(config, { logger: pino({ level: env.LOG_LEVEL }) });
  const token = async (role: Role, projects?: string[], scope?: string) =>
    (await mintLocalToken({ role, projects, scope, ttlSeconds: 3600 }, { config: config.auth })).accessToken;
  const tokenOf = async (subject: string, role: Role, projects?: string[]) =>
    (await mintLocalToken({ subject, role, projects, ttlSeconds: 3600 }, { config: config.auth })).accessToken;
  const adminToken = await token('admin');
  return {
    app,
    http: withDefaultAuthorization(app.express, adminToken),
    adminToken,
    token,
    tokenOf,
    config,
    dataDir,
    databaseUrl: env.DATABASE_URL,
    s3,
    async close() {
      await shutdownApp(app);
      await s3?.dispose();
      await database?.drop();
      await fs.rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Path of a file in the shared test data. */
export function sharedData(...parts: string[]): string {
  return path.resolve(__dirname, '../../../shared/data', ...parts);
}

/** Wraps an app so requests without an Authorization header carry `token`. */
export function withDefaultAuthorization(app: Express, token: string): Express {
  const wrapper = express();
  wrapper.use((req, _res, next) => {
    if (req.headers.authorization === undefined) req.headers.authorization = `Bearer ${token}`;
    next();
  });
  wrapper.use(app);
  return wrapper;
}
