import { Client } from 'pg';
import { getJson, makeInstance, retrieveInstance, searchStudies, WriteLedger, type SentInstance } from '../../helpers/fault-client';
import { aggregateMismatches, danglingRows, duplicateRows, lostAcknowledged, openIndex } from '../../helpers/fault-check';
import { createFaultEnv, report, sleep, type FaultEnv, type FaultServer } from '../../helpers/fault-server';
import { ADMIN_DATABASE_URL, testDbKind } from '../../helpers/test-app';

/**
 * PostgreSQL "restarted" under load. Restarting the machine's cluster would disturb every
 * other test on it, so the server's backends are terminated instead (pg_terminate_backend),
 * which is what a restart looks like from the client side: every connection dies at once.
 * Requests in flight may answer 503; later ones must succeed on the same server process,
 * and nothing acknowledged is lost.
 */
const describeOnPostgres = testDbKind() === 'postgres' ? describe : describe.skip;

describeOnPostgres('PostgreSQL connections dropped under load', () => {
  let env: FaultEnv;
  let server: FaultServer;

  beforeAll(async () => {
    env = await createFaultEnv({ db: 'postgres' });
    server = await env.start({ DB_POOL_MAX: '8' });
  }, 120_000);

  afterAll(async () => {
    await env?.close();
  });

  /** Terminates every backend of the test database but our own; returns how many. */
  async function terminateBackends(): Promise<number> {
    const dbName = new URL(env.databaseUrl!).pathname.slice(1);
    const admin = new Client({ connectionString: ADMIN_DATABASE_URL });
    await admin.connect();
    try {
      const r = await admin.query(
        'SELECT pg_terminate_backend(pid) AS t FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
        [dbName],
      );
      return r.rows.filter((row: { t: boolean }) => row.t).length;
    } finally {
      await admin.end();
    }
  }

  test('the server reconnects by itself: in-flight requests may get 503, later ones succeed, nothing acknowledged is lost', async () => {
    const ledger = new WriteLedger();
    const reads: Array<{ kind: string; status: number; ms: number; at: number; error?: string }> = [];
    const patient = `PG-${Date.now()}`;
    const batch = (): SentInstance[] => {
      const study = makeInstance().studyInstanceUID;
      return [0, 1].map((i) => makeInstance({ studyInstanceUID: study, patientID: patient, seed: Math.floor(Math.random() * 1e9) + i }));
    };
    for (let i = 0; i < 3; i++) expect((await ledger.send(server.baseUrl, batch())).status).toBe(200);

    let running = true;
    const writer = async () => {
      while (running) await ledger.send(server.baseUrl, batch());
    };
    const reader = async (kind: 'qido' | 'metadata' | 'retrieve') => {
      while (running) {
        const acked = [...ledger.acknowledged.values()];
        const s = acked[Math.floor(Math.random() * acked.length)];
        const base = `${server.baseUrl}/dicomweb/studies/${s.studyInstanceUID}/series/${s.seriesInstanceUID}/instances/${s.sopInstanceUID}`;
        const r =
          kind === 'qido'
            ? await searchStudies(server.baseUrl, { PatientID: patient, limit: '20' })
            : kind === 'metadata'
              ? await getJson(`${base}/metadata`)
              : await retrieveInstance(server.baseUrl, { study: s.studyInstanceUID, series: s.seriesInstanceUID, instance: s.sopInstanceUID });
        reads.push({ kind, status: r.status, ms: r.ms, at: Date.now(), error: r.error });
      }
    };
    const load = [
      ...Array.from({ length: 6 }, writer),
      reader('qido'),
      reader('qido'),
      reader('metadata'),
      reader('retrieve'),
      reader('retrieve'),
    ];
    const terminated: number[] = [];
    for (let i = 0; i < 4; i++) {
      await sleep(1500);
      terminated.push(await terminateBackends());
    }
    const lastKill = Date.now();
    await sleep(1500);
    running = false;
    await Promise.all(load);

    // Something was really cut each time, and the load kept flowing between the cuts.
    expect(terminated.filter((n) => n > 0).length).toBeGreaterThanOrEqual(3);
    const writes = ledger.answers;
    const allAnswers = [...writes.map((w) => ({ kind: 'stow', status: w.status, ms: w.ms, at: w.at, error: w.error })), ...reads];
    // Never a hang, for any kind of request.
    expect(allAnswers.filter((a) => a.status === 0 || a.ms > 30_000)).toEqual([]);
    // STOW and QIDO in flight: 503 at worst, never another 5xx. (WADO-RS in flight: see the
    // deterministic test below, which pins a read on a cut connection.)
    expect(allAnswers.filter((a) => (a.kind === 'stow' || a.kind === 'qido') && a.status >= 500 && a.status !== 503)).toEqual([]);
    // Once the connections are back (a short grace after the last cut), everything succeeds.
    const late = allAnswers.filter((a) => a.at > lastKill + 1000);
    expect(late.length).toBeGreaterThan(10);
    expect(late.filter((a) => a.status !== 200)).toEqual([]);

    // And afterwards, on the same process: writes, queries and reads all succeed.
    const after: number[] = [];
    for (let i = 0; i < 10; i++) after.push((await ledger.send(server.baseUrl, batch())).status);
    const s = [...ledger.acknowledged.values()].pop()!;
    after.push((await searchStudies(server.baseUrl, { PatientID: patient })).status);
    after.push((await retrieveInstance(server.baseUrl, { study: s.studyInstanceUID, series: s.seriesInstanceUID, instance: s.sopInstanceUID })).status);
    expect(after).toEqual(new Array(12).fill(200));
    expect(server.alive()).toBe(true);
    report('database-outage', {
      terminated,
      stow: ledger.statusCounts(),
      reads: reads.reduce<Record<string, number>>((m, r) => ((m[`${r.kind}:${r.status}`] = (m[`${r.kind}:${r.status}`] ?? 0) + 1), m), {}),
      acknowledged: ledger.acknowledged.size,
    });

    // Nothing acknowledged was lost, and the index is consistent (the server keeps running: PostgreSQL is shared).
    const view = await openIndex(env.config);
    try {
      expect(await lostAcknowledged(view, ledger.acknowledgedShas())).toEqual([]);
      expect(await danglingRows(view)).toEqual([]);
      expect(await aggregateMismatches(view.knex)).toEqual([]);
      expect(await duplicateRows(view.knex)).toEqual([]);
      // QIDO agrees with what was acknowledged for this patient.
      const studies = new Set([...ledger.acknowledged.values()].map((a) => a.studyInstanceUID));
      const q = await searchStudies(server.baseUrl, { PatientID: patient, limit: '10000' });
      expect(q.status).toBe(200);
      const found = new Set((q.json as Array<Record<string, { Value?: string[] }>>).map((st) => st['0020000D']?.Value?.[0]));
      expect([...studies].filter((u) => !found.has(u))).toEqual([]);
    } finally {
      await view.close();
    }
  }, 120_000);

  /**
   * Pins requests on a query that is in flight when its connection dies: a transaction holds
   * ACCESS EXCLUSIVE locks on the index tables, one request of each kind blocks on them, then
   * the server's backends are terminated and the locks released.
   */
  async function cutWhileBlocked(tables: string, requests: () => Array<Promise<{ status: number }>>): Promise<number[]> {
    const locker = new Client({ connectionString: env.databaseUrl });
    // A separate session watches: pg_stat_activity is a snapshot per transaction.
    const watcher = new Client({ connectionString: env.databaseUrl });
    await locker.connect();
    await watcher.connect();
    try {
      await locker.query('BEGIN');
      await locker.query(`LOCK TABLE ${tables} IN ACCESS EXCLUSIVE MODE`);
      const lockerPid = (await locker.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
      const pending = requests();
      const deadline = Date.now() + 15_000;
      for (;;) {
        const r = await watcher.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> $1`,
          [lockerPid],
        );
        if (r.rows[0].n >= pending.length) break;
        if (Date.now() > deadline) {
          const act = await watcher.query(`SELECT pid, state, wait_event_type, wait_event, left(query, 200) AS q FROM pg_stat_activity WHERE datname = current_database()`);
          throw new Error(`only ${r.rows[0].n} of ${pending.length} requests reached the database ${JSON.stringify(act.rows)}`);
        }
        await sleep(50);
      }
      await watcher.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid NOT IN ($1, pg_backend_pid())', [lockerPid]);
      await locker.query('ROLLBACK');
      return (await Promise.all(pending)).map((r) => r.status);
    } finally {
      await locker.end();
      await watcher.end();
    }
  }

  test('STOW and QIDO whose query is cut answer 503 (or succeed on a retried transaction), then work again', async () => {
    const s = makeInstance({ patientID: 'PG-CUT' });
    const statuses = await cutWhileBlocked('blobs, instances, series, studies', () => [
      new WriteLedger().send(server.baseUrl, [s]),
      searchStudies(server.baseUrl, { PatientID: 'PG-CUT' }),
    ]);
    // STOW blocks on its blob claim (not retried: 503) or on indexing (retried: 200).
    expect([200, 503]).toContain(statuses[0]);
    expect(statuses[1]).toBe(503);
    const again = makeInstance({ patientID: 'PG-CUT' });
    expect((await new WriteLedger().send(server.baseUrl, [again])).status).toBe(200);
    expect((await searchStudies(server.baseUrl, { PatientID: 'PG-CUT' })).status).toBe(200);
  }, 60_000);

  /** Server log lines of the WADO-RS cut below, for the known-bug test after it. */
  let wadoCutLog: string[] = [];

  test('WADO-RS metadata and retrieve whose query is cut answer 503, not 500', async () => {
    const s = makeInstance();
    expect((await new WriteLedger().send(server.baseUrl, [s])).status).toBe(200);
    const ids = { study: s.studyInstanceUID, series: s.seriesInstanceUID, instance: s.sopInstanceUID };
    const before = server.errorLines().length;
    // Only `instances` is locked: the access guard's own queries pass, the WADO look-up blocks.
    const statuses = await cutWhileBlocked('instances', () => [
      getJson(`${server.baseUrl}/dicomweb/studies/${ids.study}/series/${ids.series}/instances/${ids.instance}/metadata`),
      retrieveInstance(server.baseUrl, ids),
    ]);
    wadoCutLog = server.errorLines().slice(before);
    report('database-outage wado cut', { statuses, log: wadoCutLog.map((l) => l.slice(0, 120)) });
    expect(statuses).toEqual([503, 503]);
    // And the same process reads again.
    expect((await retrieveInstance(server.baseUrl, ids)).status).toBe(200);
  }, 60_000);

  // A dropped index connection is answered 503 by the DICOMweb error handler itself, never logged as unhandled.
  test('WADO-RS maps a dropped index connection to 503 itself (no unhandled DICOMweb error)', () => {
    expect(wadoCutLog.filter((l) => /unhandled DICOMweb error/.test(l))).toEqual([]);
  });
});
