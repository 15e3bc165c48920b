import request from 'supertest';
import pino from 'pino';
import { createApp } from '../../../src/app';
import { loadConfig } from '../../../src/config';
import { startTestApp, testDbKind, type TestApp } from '../../helpers/test-app';

describe('health endpoints', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  test('GET /healthz answers while the process is up', async () => {
    const res = await request(t.app.express).get('/healthz');
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ status: 'ok' });
  });

  test('anonymous requests to unknown paths are refused before routing (401), not told what exists', async () => {
    const res = await request(t.app.express).get('/nothing-here');
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toMatch(/^Bearer /);
  });

  test('GET /readyz checks the database and the blob store', async () => {
    const res = await request(t.app.express).get('/readyz');
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ status: 'ready', checks: { database: 'ok', blobStore: 'ok' } });
  });

  test('every response carries a request id, and a given one is echoed', async () => {
    const res = await request(t.app.express).get('/healthz').set('X-Request-Id', 'abc-123');
    expect(res.headers['x-request-id']).toBe('abc-123');
    const other = await request(t.app.express).get('/healthz');
    expect(other.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });

  test('unknown paths answer 404 with a body (for an authenticated caller)', async () => {
    const res = await request(t.http).get('/nothing-here');
    expect(res.status).toBe(404);
    expect(res.body.error).toBe('not found');
  });
});

// The embedded engine allows one process at a time, so a second app on the same files is a PostgreSQL-only case.
const onPostgres = testDbKind() === 'postgres' ? test : test.skip;

describe('schema version guard', () => {
  onPostgres('a schema with migrations this build does not know is refused', async () => {
    const t = await startTestApp();
    try {
      await t.app.db.knex('knex_migrations').insert({ name: '29991231000000_from_the_future.js', batch: 99, migration_time: new Date() });
      const config = loadConfig({
        DATA_DIR: t.dataDir,
        ...(t.databaseUrl ? { DATABASE_URL: t.databaseUrl } : {}),
        MIGRATE_ON_START: 'false',
        LOG_LEVEL: 'silent',
      });
      await expect(createApp(config, { logger: pino({ level: 'silent' }) })).rejects.toThrow(/newer than this server/);
    } finally {
      await t.app.db.knex('knex_migrations').where({ name: '29991231000000_from_the_future.js' }).delete();
      await t.close();
    }
  });
});
