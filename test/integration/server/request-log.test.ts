import { Writable } from 'node:stream';
import pino from 'pino';
import request from 'supertest';
import { createApp, shutdownApp, type AppHandle } from '../../../src/app';
import { loadConfig } from '../../../src/config';
import { startTestApp, type TestApp } from '../../helpers/test-app';

/** The request log lines pino-http writes (src/app.ts): they name the request, never its credentials. */
describe('request log', () => {
  let t: TestApp;
  let app: AppHandle;
  const lines: Array<Record<string, any>> = [];

  beforeAll(async () => {
    t = await startTestApp();
    // A second app on the same database and DATA_DIR (so the test app's tokens verify), logging at info.
    const sink = new Writable({
      write(chunk, _enc, done) {
        for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line));
        done();
      },
    });
    const config = loadConfig({ DATA_DIR: t.dataDir, ...(t.databaseUrl ? { DATABASE_URL: t.databaseUrl } : {}), LOG_LEVEL: 'info', SWEEP_INTERVAL_SECONDS: '0' });
    app = await createApp(config, { logger: pino({ level: 'info' }, sink) });
  });
  afterAll(async () => {
    await shutdownApp(app);
    await t.close();
  });

  test('a request line has the method, path, status and request id, and no Authorization header', async () => {
    const res = await request(app.express)
      .get('/dicomweb/studies?limit=1')
      .set('Authorization', `Bearer ${t.adminToken}`)
      .set('Cookie', 'session=secret-cookie')
      .set('X-Request-Id', 'log-test-1');
    expect(res.status).toBe(200);
    const line = lines.find((l) => l.req?.id === 'log-test-1' && l.res);
    expect(line).toBeDefined();
    expect(line!.req).toMatchObject({ method: 'GET', url: '/dicomweb/studies?limit=*' });
    expect(line!.res.statusCode).toBe(200);
    const text = JSON.stringify(lines);
    expect(text).not.toContain(t.adminToken);
    expect(text).not.toContain('secret-cookie');
  });

  test('search values (PHI) stay out of the log: the query keeps its parameter names only', async () => {
    const res = await request(app.express)
      .get('/dicomweb/studies?PatientName=Doe%5EJane&PatientBirthDate=19700101&fuzzymatching=true')
      .set('Authorization', `Bearer ${t.adminToken}`)
      .set('X-Request-Id', 'log-test-phi');
    expect(res.status).toBe(200);
    const line = lines.find((l) => l.req?.id === 'log-test-phi' && l.res);
    expect(line!.req.url).toBe('/dicomweb/studies?PatientName=*&PatientBirthDate=*&fuzzymatching=*');
    const text = JSON.stringify(lines);
    expect(text).not.toContain('Doe');
    expect(text).not.toContain('19700101');
  });
});
