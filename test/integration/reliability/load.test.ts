import { getJson, makeInstance, retrieveInstance, runPool, searchStudies, socketRetries, WriteLedger, type SentInstance } from '../../helpers/fault-client';
import { aggregateMismatches, danglingRows, lostAcknowledged, openIndex } from '../../helpers/fault-check';
import { createFaultEnv, report, sampleRss, sleep, type FaultEnv, type FaultServer } from '../../helpers/fault-server';
import { createRng, seededUid } from '../../helpers/fuzz-dicom';

/**
 * Sustained mixed load: 64 concurrent clients doing STOW, QIDO (by PatientID), WADO-RS
 * metadata and instance retrieve (and FHIR reads when /fhir/metadata answers 200) for a bounded
 * time: RELIABILITY_LOAD_SECONDS, default 30. Zero 5xx and zero unanswered requests, every
 * retrieve byte-identical to what was acknowledged, every acknowledged write readable
 * afterwards. RSS is sampled and reported (bench/ holds the memory figures).
 */
const SECONDS = Number(process.env.RELIABILITY_LOAD_SECONDS ?? 30);
const CLIENTS = 64;
const SEED = 6464;
/**
 * Deadline per request. Generous: on the embedded engine (one connection, an audit write per
 * request) 64 clients queue, and p99 was seen above 20 s on a busy 2-core machine.
 */
const REQUEST_TIMEOUT_MS = 60_000;

interface Answer {
  kind: string;
  status: number;
  ms: number;
  error?: string;
}

describe('sustained mixed load', () => {
  let env: FaultEnv;
  let server: FaultServer;

  beforeAll(async () => {
    env = await createFaultEnv();
    server = await env.start();
  }, 120_000);

  afterAll(async () => {
    await env?.close();
  });

  test(`${CLIENTS} clients for ${SECONDS} s: no 5xx, nothing lost, byte-identical reads`, async () => {
    const rng = createRng(SEED);
    const ledger = new WriteLedger();
    const answers: Answer[] = [];
    const mismatches: string[] = [];
    const patients = Array.from({ length: 16 }, (_, i) => `LOAD-${i}`);
    const sharedStudies = Array.from({ length: 4 }, () => seededUid(rng));
    let counter = 0;
    const batch = (): SentInstance[] => {
      const n = 1 + Math.floor(rng() * 3);
      // Half the writes go to a few studies shared by all clients (contention on one row), half to fresh ones.
      const shared = rng() < 0.5 ? Math.floor(rng() * sharedStudies.length) : -1;
      const study = shared >= 0 ? sharedStudies[shared] : seededUid(rng);
      const patient = shared >= 0 ? patients[shared] : patients[Math.floor(rng() * patients.length)];
      const series = seededUid(rng);
      return Array.from({ length: n }, () => makeInstance({ studyInstanceUID: study, seriesInstanceUID: series, patientID: patient, seed: counter++ }));
    };
    // Something to read from the first second on.
    for (let i = 0; i < 8; i++) expect((await ledger.send(server.baseUrl, batch())).status).toBe(200);
    const fhir = (await getJson(`${server.baseUrl}/fhir/metadata`, 'application/fhir+json')).status === 200;

    const rss = sampleRss(server.pid, 200);
    const t0 = Date.now();
    const deadline = t0 + SECONDS * 1000;
    const pick = () => {
      const acked = [...ledger.acknowledged.values()];
      return acked[Math.floor(rng() * acked.length)];
    };
    const client = async () => {
      while (Date.now() < deadline) {
        const roll = rng();
        if (roll < 0.3) {
          const r = await ledger.send(server.baseUrl, batch(), REQUEST_TIMEOUT_MS);
          answers.push({ kind: 'stow', status: r.status, ms: r.ms, error: r.error });
        } else if (roll < 0.55) {
          const r = await searchStudies(server.baseUrl, { PatientID: patients[Math.floor(rng() * patients.length)], limit: '50' }, REQUEST_TIMEOUT_MS);
          answers.push({ kind: 'qido', status: r.status, ms: r.ms, error: r.error });
        } else if (roll < 0.75) {
          const s = pick();
          const r = await getJson(
            `${server.baseUrl}/dicomweb/studies/${s.studyInstanceUID}/series/${s.seriesInstanceUID}/instances/${s.sopInstanceUID}/metadata`,
            'application/dicom+json',
            REQUEST_TIMEOUT_MS,
          );
          answers.push({ kind: 'metadata', status: r.status, ms: r.ms, error: r.error });
        } else if (roll < 0.95 || !fhir) {
          const s = pick();
          const r = await retrieveInstance(server.baseUrl, { study: s.studyInstanceUID, series: s.seriesInstanceUID, instance: s.sopInstanceUID }, REQUEST_TIMEOUT_MS);
          answers.push({ kind: 'retrieve', status: r.status, ms: r.ms, error: r.error });
          if (r.status === 200 && !r.bytes?.equals(s.bytes)) mismatches.push(s.sopInstanceUID);
        } else {
          const r = await getJson(`${server.baseUrl}/fhir/ImagingStudy?_count=10`, 'application/fhir+json', REQUEST_TIMEOUT_MS);
          answers.push({ kind: 'fhir', status: r.status, ms: r.ms, error: r.error });
        }
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, client));
    const elapsed = Date.now() - t0;
    await sleep(1000);
    rss.stop();

    // Memory is reported, not asserted: RSS of a busy V8 process swings by a quarter between
    // collections while the live heap stays flat (heapUsed after a full GC stayed at 39-41 MB
    // through 120 s of this load, RSS moved between 180 and 285 MB), so a bound on it fails on
    // a loaded machine without a leak. Memory targets live in bench/ (peak RSS per phase).
    const q = elapsed / 4;
    const afterWarmUp = rss.medianBetween(q, 2 * q);
    const atEnd = rss.medianBetween(3 * q, elapsed + 1);
    const byKind: Record<string, Record<number, number>> = {};
    for (const a of answers) {
      byKind[a.kind] ??= {};
      byKind[a.kind][a.status] = (byKind[a.kind][a.status] ?? 0) + 1;
    }
    const p99 = [...answers].map((a) => a.ms).sort((x, y) => x - y)[Math.floor(answers.length * 0.99)];
    report('load', {
      seconds: elapsed / 1000,
      requests: answers.length,
      perSecond: Math.round(answers.length / (elapsed / 1000)),
      p99Ms: p99,
      byKind,
      fhir,
      acknowledged: ledger.acknowledged.size,
      rssKb: { afterWarmUp, atEnd, max: rss.max() },
      rssEvery5sKb: Array.from({ length: Math.ceil(elapsed / 5000) }, (_, i) => rss.medianBetween(i * 5000, (i + 1) * 5000)),
      socketRetries: socketRetries.count,
    });

    expect(answers.filter((a) => a.status === 0 || a.status >= 500)).toEqual([]);
    // Reads of instances that exist: all 200.
    expect(answers.filter((a) => a.kind !== 'stow' && a.status !== 200)).toEqual([]);
    expect(answers.filter((a) => a.kind === 'stow' && a.status !== 200)).toEqual([]);
    expect(mismatches).toEqual([]);
    // The load ran (a floor far below any real rate: a saturated shared machine gave ~8 a second).
    expect(answers.length).toBeGreaterThan(SECONDS * 2);
    expect(server.errorLines()).toEqual([]);

    // Every acknowledged write reads back byte-identical through WADO-RS...
    const unreadable: string[] = [];
    await runPool([...ledger.acknowledged.values()], 16, async (s) => {
      const got = await retrieveInstance(server.baseUrl, { study: s.studyInstanceUID, series: s.seriesInstanceUID, instance: s.sopInstanceUID });
      if (got.status !== 200 || !got.bytes?.equals(s.bytes)) unreadable.push(`${s.sopInstanceUID}: ${got.status}`);
    });
    expect(unreadable).toEqual([]);

    // ...and the index agrees, with exact aggregates, after a clean stop.
    await server.stop();
    expect(server.exit()).toEqual({ code: 0, signal: null });
    const view = await openIndex(env.config);
    try {
      expect(await lostAcknowledged(view, ledger.acknowledgedShas(), new Set())).toEqual([]);
      expect(await danglingRows(view)).toEqual([]);
      expect(await aggregateMismatches(view.knex)).toEqual([]);
    } finally {
      await view.close();
    }
  }, (SECONDS + 150) * 1000);
});
