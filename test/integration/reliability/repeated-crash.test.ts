import { makeInstance, WriteLedger, type SentInstance } from '../../helpers/fault-client';
import {
  aggregateMismatches,
  danglingRows,
  duplicateRows,
  lostAcknowledged,
  openIndex,
  stagingLeftovers,
  unreferencedBlobs,
} from '../../helpers/fault-check';
import { createFaultEnv, longRun, report, runSweepCli, sleep, waitUntil, type FaultEnv } from '../../helpers/fault-server';
import { createRng, seededUid } from '../../helpers/fuzz-dicom';

/**
 * The server killed with SIGKILL in the middle of concurrent STOW requests, over and over on
 * the same DATA_DIR and database: after every kill, every acknowledged instance is indexed and
 * byte-identical and no index row points at a missing blob; at the end a sweep with a zero
 * grace period leaves no unreferenced blob and no staging file.
 *
 * Cycles: 20, within a 60 s budget: once 5 cycles are done, no new cycle starts after 60 s
 * (about 2-3 s per cycle on PostgreSQL on a quiet 2-core machine, so all 20 fit; the embedded
 * engine restarts slower). RELIABILITY_LONG=1 runs all 20 whatever the time;
 * RELIABILITY_CRASH_CYCLES sets the number.
 */
const BUDGET_MS = 60_000;
const MIN_CYCLES = 5;
const SEED = 777;

describe('repeated SIGKILL during concurrent STOW', () => {
  let env: FaultEnv;

  beforeAll(async () => {
    env = await createFaultEnv();
  });

  afterAll(async () => {
    await env?.close();
  });

  test('zero acknowledged instances lost, zero dangling rows after every kill; orphans swept at the end', async () => {
    const planned = Number(process.env.RELIABILITY_CRASH_CYCLES ?? 20);
    const budgeted = !longRun() && process.env.RELIABILITY_CRASH_CYCLES === undefined;
    const began = Date.now();
    const rng = createRng(SEED);
    const ledger = new WriteLedger();
    const perCycle: Array<{ acked: number; inFlightAtKill: number; startMs: number; checkMs: number }> = [];

    for (let cycle = 0; cycle < planned; cycle++) {
      if (budgeted && cycle >= MIN_CYCLES && Date.now() - began > BUDGET_MS) break;
      const t0 = Date.now();
      const server = await env.start();
      const startMs = Date.now() - t0;
      const ackedBefore = ledger.acknowledged.size;
      const earlierUids = new Set(ledger.acknowledged.keys());
      // One study shared by all clients this cycle (different series), so index transactions contend.
      const study = seededUid(rng);
      let stop = false;
      let inFlightAtKill = 0;
      const client = async (worker: number) => {
        const series = seededUid(rng);
        for (let round = 0; !stop; round++) {
          const batch: SentInstance[] = Array.from({ length: 3 }, (_, i) =>
            makeInstance({ studyInstanceUID: study, seriesInstanceUID: series, patientID: `CRASH-${cycle}`, seed: cycle * 1e6 + worker * 1e4 + round * 10 + i }),
          );
          // Now and then an instance acknowledged earlier, again: an idempotent store.
          const earlier = [...ledger.acknowledged.values()];
          if (round % 4 === 3 && earlier.length > 0) batch.push(earlier[Math.floor(rng() * earlier.length)]);
          const r = await ledger.send(server.baseUrl, batch, 30_000);
          if (r.status === 0) {
            inFlightAtKill++;
            return; // the server is gone
          }
        }
      };
      const clients = Array.from({ length: 6 }, (_, w) => client(w));
      // Kill at a seeded moment once this cycle has had some acknowledgements.
      await waitUntil(() => ledger.acknowledged.size >= ackedBefore + 6, 30_000, `cycle ${cycle}: acknowledgements (answers so far: ${JSON.stringify(ledger.statusCounts())})`);
      await sleep(50 + Math.floor(rng() * 400));
      await server.kill();
      stop = true;
      await Promise.all(clients);
      expect(server.exit()?.signal).toBe('SIGKILL');

      const c0 = Date.now();
      const view = await openIndex(env.config);
      try {
        // All acknowledged so far must be indexed with their bytes; this cycle's are read back in full.
        const fresh = new Set([...ledger.acknowledged.keys()].filter((u) => !earlierUids.has(u)));
        expect({ cycle, lost: await lostAcknowledged(view, ledger.acknowledgedShas(), fresh) }).toEqual({ cycle, lost: [] });
        expect({ cycle, dangling: await danglingRows(view) }).toEqual({ cycle, dangling: [] });
        expect({ cycle, aggregates: await aggregateMismatches(view.knex) }).toEqual({ cycle, aggregates: [] });
        expect({ cycle, duplicates: await duplicateRows(view.knex) }).toEqual({ cycle, duplicates: [] });
      } finally {
        await view.close();
      }
      perCycle.push({ acked: ledger.acknowledged.size - ackedBefore, inFlightAtKill, startMs, checkMs: Date.now() - c0 });
    }
    const cycles = perCycle.length;
    expect(cycles).toBeGreaterThanOrEqual(Math.min(MIN_CYCLES, planned));
    // The kills really landed mid-request.
    expect(perCycle.filter((c) => c.inFlightAtKill > 0).length).toBe(cycles);

    // Sweep what the crashes left (grace 0), as an operator would, then nothing unreferenced remains.
    const swept = await runSweepCli(env, { ORPHAN_GRACE_SECONDS: '0' });
    const view = await openIndex(env.config);
    try {
      expect(await unreferencedBlobs(view)).toEqual([]);
      expect(await danglingRows(view)).toEqual([]);
      expect(await lostAcknowledged(view, ledger.acknowledgedShas())).toEqual([]);
    } finally {
      await view.close();
    }
    expect(stagingLeftovers(env.config)).toEqual([]);
    report('repeated-crash', { cycles, acknowledged: ledger.acknowledged.size, statuses: ledger.statusCounts(), swept, perCycle });
  }, 600_000);
});
