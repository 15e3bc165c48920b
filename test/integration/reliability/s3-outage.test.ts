import { createApp, shutdownApp } from '../../../src/app';
import { loadConfig } from '../../../src/config';
import pino from 'pino';
import { getJson, makeInstance, retrieveInstance, runPool, waitForStatus, WriteLedger, type SentInstance } from '../../helpers/fault-client';
import { aggregateMismatches, danglingRows, lostAcknowledged, openIndex, stagingLeftovers, unreferencedBlobs } from '../../helpers/fault-check';
import { createFaultEnv, report, sleep, waitUntil, type FaultEnv, type FaultServer } from '../../helpers/fault-server';

/**
 * The S3-protocol store (s3rver over HTTP) stopped in the middle of concurrent STOW requests:
 * requests fail cleanly (503 with Retry-After, or a failure reason), nothing is half-indexed
 * (no index row whose object is missing, no 503-answered instance indexed), and storing works
 * again, without a server restart, once S3 is back.
 */
describe('S3 outage mid-STOW', () => {
  let env: FaultEnv;
  let server: FaultServer;

  beforeAll(async () => {
    env = await createFaultEnv({ blobs: 's3' });
    server = await env.start();
  }, 120_000);

  afterAll(async () => {
    await env?.close();
  });

  test('fails cleanly while S3 is down, nothing half-indexed, works again when S3 returns', async () => {
    const s3 = env.s3!;
    const ledger = new WriteLedger();
    // 128 KiB instances, two per request: uploads are in flight when S3 goes away.
    const batch = (): SentInstance[] => {
      const study = makeInstance().studyInstanceUID;
      return [0, 1].map((i) => makeInstance({ studyInstanceUID: study, rows: 256, columns: 256, seed: Math.floor(Math.random() * 1e9) + i }));
    };
    for (let i = 0; i < 3; i++) expect((await ledger.send(server.baseUrl, batch())).status).toBe(200);

    let phase: 'up' | 'down' | 'done' = 'up';
    const client = async () => {
      while (phase !== 'done') await ledger.send(server.baseUrl, batch(), 30_000);
    };
    const clients = Array.from({ length: 4 }, client);
    await waitUntil(() => ledger.acknowledged.size >= 20, 60_000, `20 acknowledged instances (answers so far: ${JSON.stringify(ledger.statusCounts())})`);
    const ackedBeforeOutage = ledger.acknowledged.size;
    const outageStart = ledger.answers.length;
    await s3.stop();
    phase = 'down';
    await sleep(2500);
    const ready = await getJson(`${server.baseUrl}/readyz`, 'application/json');
    expect(ready.status).toBe(503);
    phase = 'done';
    await Promise.all(clients);
    const outage = ledger.answers.slice(outageStart);

    // Every answer during the outage: a 503 with Retry-After, or a per-instance failure; never a hang or another 5xx.
    const bad = outage.filter((a) => a.status === 0 || (a.status >= 500 && a.status !== 503) || a.ms > 20_000);
    expect(bad).toEqual([]);
    const unavailable = outage.filter((a) => a.status === 503);
    expect(unavailable.length).toBeGreaterThan(0);
    for (const a of unavailable) {
      expect(a.retryAfter).toBeTruthy();
      expect(a.comment).toMatch(/blob store/);
    }

    // S3 comes back: the same server process stores again.
    await s3.restart();
    expect(await waitForStatus(`${server.baseUrl}/readyz`, 20_000)).toBe(true);
    const after = await Promise.all(Array.from({ length: 8 }, () => ledger.send(server.baseUrl, batch())));
    expect(after.map((r) => r.status)).toEqual(new Array(8).fill(200));
    report('s3-outage', { statuses: ledger.statusCounts(), ackedBeforeOutage, acknowledged: ledger.acknowledged.size, outageAnswers: outage.length });

    // Every acknowledged instance reads back byte-identical through WADO-RS.
    const problems: string[] = [];
    await runPool([...ledger.acknowledged.values()], 4, async (s) => {
      const got = await retrieveInstance(server.baseUrl, { study: s.studyInstanceUID, series: s.seriesInstanceUID, instance: s.sopInstanceUID });
      if (got.status !== 200 || !got.bytes?.equals(s.bytes)) problems.push(`${s.sopInstanceUID}: ${got.status} ${got.error ?? ''}`);
    });
    expect(problems).toEqual([]);
    expect(server.errorLines().filter((l) => !/blob store (unavailable|write failed)|"statusCode":503/.test(l))).toEqual([]);

    // The index against the bucket, with the server stopped.
    await server.stop();
    const refused = outage.filter((a) => a.status === 503).flatMap((a) => a.uids);
    const view = await openIndex(env.config);
    try {
      expect(await danglingRows(view)).toEqual([]);
      expect(await lostAcknowledged(view, ledger.acknowledgedShas())).toEqual([]);
      expect(await aggregateMismatches(view.knex)).toEqual([]);
      // An instance answered with 503 was not indexed (the client will retry it).
      expect(await view.knex('instances').whereIn('sop_instance_uid', refused).pluck('sop_instance_uid')).toEqual([]);
    } finally {
      await view.close();
    }

    // What the outage left in the bucket unreferenced goes with a sweep (grace 0).
    const app = await createApp(loadConfig({ ...env.env, ORPHAN_GRACE_SECONDS: '0', LOG_LEVEL: 'silent' }), { logger: pino({ level: 'silent' }) });
    try {
      await app.sweeper.sweep({ full: true });
    } finally {
      await shutdownApp(app);
    }
    const swept = await openIndex(env.config);
    try {
      expect(await unreferencedBlobs(swept)).toEqual([]);
      expect(await danglingRows(swept)).toEqual([]);
    } finally {
      await swept.close();
    }
    expect(stagingLeftovers(env.config)).toEqual([]);
  }, 120_000);
});
