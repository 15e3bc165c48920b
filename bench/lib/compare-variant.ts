import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { prepareCtSeries, prepareOctVolumes, prepareQidoStudies, qidoPatientId, type StoredSeries } from './compare-data';
import {
  measureLatency,
  measureRetrieve,
  measureStow,
  newFigure,
  qidoByPatient,
  seriesMetadata,
  singleFrame,
  stowTargetOf,
  type ComparedServer,
  type Figure,
} from './compare-figures';
import { OCT_GEOMETRY } from './instances';
import { orthancConfig, orthancStatistics, startOrthanc, type OrthancInstall, type OrthancPostgres, type OrthancProcess } from './orthanc-process';
import { countFiles } from './phase-meter';
import { createBenchDatabase, type BenchDatabase } from './postgres';
import { readMemory } from './process-stats';
import { prepareRealStudy } from './real-studies';
import { fmt } from './report';
import { findFreePort, startServer, type ServerProcess } from './server-process';
import { sendAll } from './stow-client';

/** Counts of one comparison run. */
export interface CompareSizes {
  reps: number;
  /** CT slices per STOW row and repetition. */
  small: number;
  batch: number;
  /** OCT volumes per repetition. */
  volumes: number;
  /** Instance counts at which QIDO is measured (the population is grown to each in turn). */
  qidoScales: number[];
  /** Timed requests per latency figure and repetition. */
  requests: number;
  warmup: number;
  /** Study retrieves per repetition. */
  retrieves: number;
  /** Wall time allowed for growing the QIDO population beyond the first scale, both servers together. */
  loadBudgetSeconds: number;
}

/** Full run: the counts of bench/stow.ts, QIDO at 10k and 100k instances. */
export const COMPARE_FULL: CompareSizes = { reps: 3, small: 1000, batch: 50, volumes: 10, qidoScales: [10_000, 100_000], requests: 200, warmup: 20, retrieves: 10, loadBudgetSeconds: 1500 };
/** `--quick`: about three minutes. */
export const COMPARE_QUICK: CompareSizes = { reps: 3, small: 100, batch: 50, volumes: 2, qidoScales: [2_000], requests: 30, warmup: 5, retrieves: 3, loadBudgetSeconds: 0 };

/** Server names, as the tables show them. */
export const IL = 'imaging-lake';
export const ORTHANC = 'Orthanc';

/** One pairing (imaging-lake on a database, Orthanc on the matching index) and its figures. */
export interface CompareVariant {
  db: 'embedded' | 'postgres';
  labels: Record<string, string>;
  figures: Figure[];
  startup: Record<string, { seconds: number; rssBytes: number }>;
  qido: Array<{ requested: number; reached: number; loadSeconds: number }>;
  orthancConfig?: Record<string, unknown>;
  /** Instances sent, acknowledged by the STOW answers, and found stored afterwards, per server. */
  stored?: Record<string, { sent: number; acknowledged: number; resent?: number; repaired?: number; found?: number; how: string }>;
  error?: string;
}

/** Machine floor figures the targets refer to. */
export interface CompareFloors {
  diskWriteMBps: number;
  diskReadMBps: number;
  sha256MBps: number;
  smallFilesPerSecond: number;
}

const SMALL_ROWS: Array<{ perRequest: number; concurrency: number }> = [
  { perRequest: 1, concurrency: 1 },
  { perRequest: 1, concurrency: 8 },
  { perRequest: 50, concurrency: 1 },
  { perRequest: 50, concurrency: 8 },
];

/**
 * Starts imaging-lake and Orthanc side by side (each on a fresh DATA_DIR / storage directory,
 * and on fresh PostgreSQL databases in the postgres pairing), measures every figure on both,
 * and stops both.
 */
export async function runCompareVariant(
  db: 'embedded' | 'postgres',
  o: { sizes: CompareSizes; adminUrl: string; keep: boolean; repoRoot: string; workRoot: string; install: OrthancInstall; floors: CompareFloors },
  log: (line: string) => void,
): Promise<CompareVariant> {
  const v: CompareVariant = {
    db,
    labels: {
      [IL]: db === 'postgres' ? 'imaging-lake (PostgreSQL server, filesystem store)' : 'imaging-lake (embedded PGlite, filesystem store)',
      [ORTHANC]: `${o.install.version}, DICOMweb ${o.install.dicomWebVersion}` + (db === 'postgres' ? `, PostgreSQL index ${o.install.postgresVersion}` : ', SQLite index'),
    },
    figures: [],
    startup: {},
    qido: [],
  };
  const dir = await mkdtemp(path.join(o.workRoot, `compare-${db}-`));
  const databases: BenchDatabase[] = [];
  let il: ServerProcess | undefined;
  let orthanc: OrthancProcess | undefined;
  try {
    const ilEnv: Record<string, string> = {
      PORT: String(await findFreePort()),
      HOST: '127.0.0.1',
      DATA_DIR: path.join(dir, 'imaging-lake'),
      LOG_LEVEL: 'warn',
      SWEEP_INTERVAL_SECONDS: '0',
      NODE_ENV: 'production',
    };
    let ilDb: BenchDatabase | undefined;
    let orthancDb: BenchDatabase | undefined;
    let orthancPg: OrthancPostgres | undefined;
    if (db === 'postgres') {
      ilDb = await createBenchDatabase(o.adminUrl);
      orthancDb = await createBenchDatabase(o.adminUrl);
      databases.push(ilDb, orthancDb);
      ilEnv.DATABASE_URL = ilDb.url;
      const u = new URL(orthancDb.url);
      orthancPg = { host: u.hostname, port: Number(u.port || 5432), database: orthancDb.name, username: decodeURIComponent(u.username || 'postgres'), password: decodeURIComponent(u.password) };
      log(`created databases ${ilDb.name} (imaging-lake) and ${orthancDb.name} (Orthanc)`);
    }
    let t0 = performance.now();
    il = await startServer({ repoRoot: o.repoRoot, env: ilEnv });
    v.startup[IL] = { seconds: (performance.now() - t0) / 1000, rssBytes: readMemory(il.pid)?.rssBytes ?? 0 };
    t0 = performance.now();
    const orthancPort = await findFreePort();
    orthanc = await startOrthanc(o.install, path.join(dir, 'orthanc'), orthancPort, orthancPg);
    v.startup[ORTHANC] = { seconds: (performance.now() - t0) / 1000, rssBytes: readMemory(orthanc.pid)?.rssBytes ?? 0 };
    v.orthancConfig = orthancConfig(o.install, path.join(dir, 'orthanc'), orthancPort, orthancPg && { ...orthancPg, password: orthancPg.password ? '***' : '' });
    log(`${db}: imaging-lake pid ${il.pid} on ${il.baseUrl}, Orthanc pid ${orthanc.pid} on ${orthanc.baseUrl}`);
    const servers: ComparedServer[] = [
      { name: IL, pid: il.pid, baseUrl: il.baseUrl, root: '/dicomweb', headers: il.headers ?? {}, database: ilDb, tally: { sent: 0, acknowledged: 0 } },
      { name: ORTHANC, pid: orthanc.pid, baseUrl: orthanc.baseUrl, root: '/dicom-web', headers: {}, database: orthancDb, tally: { sent: 0, acknowledged: 0 } },
    ];
    try {
      await runFigures(v, servers, o.sizes, o.floors, log);
    } finally {
      const [ilServer, orthancServer] = servers as [ComparedServer, ComparedServer];
      v.stored = {
        // Every instance sent is different, so the content-addressed store holds one file per instance.
        [IL]: { ...ilServer.tally, found: await countFiles(path.join(ilEnv.DATA_DIR!, 'store', 'blobs')), how: 'blob files' },
        [ORTHANC]: { ...orthancServer.tally, found: (await orthancStatistics(orthanc.baseUrl).catch(() => undefined))?.instances, how: 'GET /statistics' },
      };
    }
  } catch (err) {
    v.error = String((err as Error)?.stack ?? err);
    log(`${db}: ${v.error}`);
  } finally {
    for (const s of [il, orthanc]) {
      if (!s) continue;
      await s.stop();
      const exit = s.exited();
      if (exit && exit !== 'exit code 0') log(`${db}: ${s === il ? IL : ORTHANC} ended with ${exit}`);
    }
    for (const d of databases) await d.drop().then(() => log(`dropped database ${d.name}`), (err: unknown) => log(`could not drop ${d.name}: ${String(err)}`));
    if (!o.keep) await rm(dir, { recursive: true, force: true });
  }
  return v;
}

async function runFigures(v: CompareVariant, servers: ComparedServer[], sizes: CompareSizes, floors: CompareFloors, log: (line: string) => void): Promise<void> {
  const add = (f: Figure) => (v.figures.push(f), f);
  const { reps } = sizes;

  // 1. The QIDO population, grown to each scale, and QIDO by PatientID at each.
  const load = add(newFigure({ id: 'load', title: `bulk load of the QIDO population (${sizes.batch} per request, concurrency 8), median of chunks of 1,000`, unit: 'inst/s', better: 'higher', phase: 'load', cpuPer: 'inst' }));
  let studies = 0;
  const budgetStart = performance.now();
  for (const [i, scale] of sizes.qidoScales.entries()) {
    const target = Math.round(scale / 10);
    const t0 = performance.now();
    let chunk = 0;
    while (studies < target) {
      if (i > 0 && (performance.now() - budgetStart) / 1000 > sizes.loadBudgetSeconds) {
        log(`load budget of ${sizes.loadBudgetSeconds} s spent: QIDO measured at ${fmt(studies * 10, 0)} instances instead of ${fmt(scale, 0)}`);
        break;
      }
      const next = Math.min(target, studies + 100);
      const batch = prepareQidoStudies(studies, next, sizes.batch, 'q');
      await measureStow(servers, chunk++, batch.requests, 8, load, 'inst', true);
      studies = next;
    }
    v.qido.push({ requested: scale, reached: studies * 10, loadSeconds: (performance.now() - t0) / 1000 });
    log(`QIDO population: ${fmt(studies * 10, 0)} instances in both servers`);
    const patients = Array.from({ length: Math.ceil(studies / 4) }, (_, p) => qidoPatientId(p * 4));
    const label = `${fmt(studies * 10, 0)} instances`;
    const p50 = add(newFigure({ id: `qido-p50-${scale}`, title: `QIDO /studies?PatientID= p50 at ${label}`, unit: 'ms', better: 'lower', phase: 'qido', cpuPer: 'req' }));
    const p95 = add(newFigure({ id: `qido-p95-${scale}`, title: `QIDO /studies?PatientID= p95 at ${label}`, unit: 'ms', better: 'lower', phase: 'qido', cpuPer: 'req' }));
    if (i === 0) p95.target = { text: '>= 5x Orthanc', pass: (a, b) => b / a >= 5 };
    for (let rep = 0; rep < reps; rep++) await measureLatency(servers, rep, sizes.requests, sizes.warmup, qidoByPatient(patients, 100 + rep), p50, p95);
    log(`QIDO at ${label} measured`);
    if (i === 0) await runStowAndReads(v, servers, sizes, floors, log, add);
  }
}

async function runStowAndReads(
  v: CompareVariant,
  servers: ComparedServer[],
  sizes: CompareSizes,
  floors: CompareFloors,
  log: (line: string) => void,
  add: (f: Figure) => Figure,
): Promise<void> {
  const { reps } = sizes;
  // 2. STOW-RS of small instances, the same bodies to both servers.
  const ctSeries: StoredSeries[] = [];
  for (const row of SMALL_ROWS) {
    const f = add(newFigure({ id: `stow-x${row.perRequest}-c${row.concurrency}`, title: `STOW-RS CT slices (~34 kB), ${row.perRequest} per request, concurrency ${row.concurrency}`, unit: 'inst/s', better: 'higher', phase: 'stow small', cpuPer: 'inst' }));
    if (row.concurrency === 8) f.target = { text: '>= 2x Orthanc', pass: (a, b) => a / b >= 2 };
    for (let rep = 0; rep < reps; rep++) {
      const batch = prepareCtSeries(sizes.small, 100, row.perRequest, `s${row.perRequest}-${row.concurrency}-${rep}`);
      await measureStow(servers, rep, batch.requests, row.concurrency, f, 'inst');
      ctSeries.push(...batch.series.filter((s) => s.instances.length === 100));
    }
    log(`${f.id} measured`);
  }
  // 3. STOW-RS of OCT volumes.
  const volumes: StoredSeries[] = [];
  const opt = add(newFigure({ id: 'stow-opt', title: `STOW-RS OPT volumes (61 x 496 x 768, ~23 MB), 1 per request, concurrency 1`, unit: 'MB/s', better: 'higher', phase: 'stow volumes', cpuPer: 'MB' }));
  opt.target = { text: `>= ${fmt(floors.diskWriteMBps / 2, 0)} MB/s (half the disk write floor)`, pass: (a) => a >= floors.diskWriteMBps / 2 };
  for (let rep = 0; rep < reps; rep++) {
    const batch = prepareOctVolumes(sizes.volumes, `v${rep}`);
    await measureStow(servers, rep, batch.requests, 1, opt, 'MB');
    volumes.push(...batch.series);
  }
  log('stow-opt measured');
  // 4. Reads: metadata of 100-instance CT series, single frames, study retrieves.
  const metaP50 = add(newFigure({ id: 'metadata-p50', title: 'WADO-RS series metadata (CT series of 100 instances) p50', unit: 'ms', better: 'lower', phase: 'metadata', cpuPer: 'req' }));
  const metaP95 = add(newFigure({ id: 'metadata-p95', title: 'WADO-RS series metadata (CT series of 100 instances) p95', unit: 'ms', better: 'lower', phase: 'metadata', cpuPer: 'req' }));
  for (let rep = 0; rep < reps; rep++) await measureLatency(servers, rep, sizes.requests, sizes.warmup, seriesMetadata(ctSeries, 200 + rep), metaP50, metaP95);
  const frameP50 = add(newFigure({ id: 'frame-p50', title: 'WADO-RS single frame of a 61-frame OPT volume p50', unit: 'ms', better: 'lower', phase: 'frames', cpuPer: 'req' }));
  const frameP95 = add(newFigure({ id: 'frame-p95', title: 'WADO-RS single frame of a 61-frame OPT volume p95', unit: 'ms', better: 'lower', phase: 'frames', cpuPer: 'req' }));
  frameP95.target = { text: '>= 10x Orthanc', pass: (a, b) => b / a >= 10 };
  const frameBytes = OCT_GEOMETRY.rows * OCT_GEOMETRY.columns;
  for (let rep = 0; rep < reps; rep++) await measureLatency(servers, rep, sizes.requests, sizes.warmup, singleFrame(volumes, frameBytes, 300 + rep), frameP50, frameP95);
  log('metadata and frames measured');
  const visit = prepareRealStudy('oct');
  for (const s of servers) {
    const st = await sendAll(stowTargetOf(s), visit.requests, 1, 300_000);
    s.tally.sent += visit.requests.length;
    s.tally.acknowledged += st.referenced;
    if (st.failures) throw new Error(`${s.name}: storing the OCT visit failed: ${st.failureSamples.join('; ')}`);
  }
  const ct = ctSeries[0]!;
  const ctBytes = ct.instances.reduce((n, i) => n + i.bytes, 0);
  const retrieveOct = add(newFigure({ id: 'retrieve-oct', title: `WADO-RS study retrieve, OCT visit (2 volumes + 2 OP images, ${fmt(visit.study.bytes / 1e6, 1)} MB)`, unit: 'MB/s', better: 'higher', phase: 'retrieve', cpuPer: 'MB' }));
  const retrieveCt = add(newFigure({ id: 'retrieve-ct', title: `WADO-RS study retrieve, CT study (100 instances, ${fmt(ctBytes / 1e6, 1)} MB)`, unit: 'MB/s', better: 'higher', phase: 'retrieve', cpuPer: 'MB' }));
  for (let rep = 0; rep < reps; rep++) {
    await measureRetrieve(servers, rep, sizes.retrieves, visit.study.studyInstanceUID, visit.study.bytes, retrieveOct);
    await measureRetrieve(servers, rep, sizes.retrieves, ct.studyInstanceUID, ctBytes, retrieveCt);
  }
  log('study retrieves measured');
}
