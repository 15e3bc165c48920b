import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'pg';
import { IndexLoader } from './lib/index-loader';
import { studiesFor } from './lib/index-population';
import { measureDiskFloor } from './lib/machine-floor';
import { measurePhase } from './lib/phase-meter';
import { createBenchDatabase, type BenchDatabase } from './lib/postgres';
import { readMemory } from './lib/process-stats';
import { buildReadCases } from './lib/qido-wado-cases';
import { caseVerdict, renderReadRun, type ReadRun, type ScaleResult } from './lib/qido-wado-report';
import { runReadSeries, type DicomwebEndpoint } from './lib/read-client';
import { storeRealStudies } from './lib/real-studies';
import { fmt, updateResultsFile } from './lib/report';
import { findFreePort, staleBuildWarning, startServer, type ServerProcess } from './lib/server-process';
import { benchCli } from './lib/cli';

/**
 * QIDO-RS / WADO-RS latency at scale (bench/README.md). Starts the built server on a fresh
 * PostgreSQL database, stores one real study of each kind through STOW-RS, then grows the
 * index with SQL clones of them (10 instances per study) to each scale in turn and measures
 * searches, metadata, single frames and study retrieves at each.
 *
 *   npx tsx bench/qido-wado.ts [--quick] [--scales 10000,100000,1000000] [--requests N] [--write] [--keep] [--admin-url URL]
 *
 * Exit status: 0 all targets met at the largest scale, 3 only performance targets missed,
 * 1 a request failed or the index was not filled as planned, 2 bad arguments.
 */

const REPO_ROOT = path.resolve(__dirname, '..');
const RESULTS_FILE = path.join(__dirname, 'RESULTS.md');
const USAGE = 'usage: npx tsx bench/qido-wado.ts [--quick] [--scales N,N,...] [--requests N] [--write] [--keep] [--admin-url URL]\n';
const cli = benchCli('bench/qido-wado.ts', USAGE);
const usage = cli.usage;

interface ReadOptions {
  quick: boolean;
  scales: number[];
  requests: number;
  warmup: number;
  retrieves: number;
  write: boolean;
  keep: boolean;
  adminUrl: string;
}

/** Parses the command line; exits with status 2 and a message on anything invalid. */
export function parseReadOptions(argv: string[]): ReadOptions {
  const values = cli.parse(argv, {
    quick: { type: 'boolean', default: false },
    scales: { type: 'string' },
    requests: { type: 'string' },
    write: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    'admin-url': { type: 'string', default: 'postgres://postgres@127.0.0.1:5432/postgres' },
    db: { type: 'string', default: 'postgres' },
  });
  if (values.db !== 'postgres') usage('only --db postgres is supported: the index is filled with SQL on a PostgreSQL server');
  const quick = Boolean(values.quick);
  const scales = String(values.scales ?? (quick ? '100000' : '10000,100000,1000000'))
    .split(',')
    .map((s) => Number(s.trim().replace(/_/g, '')));
  if (scales.some((s) => !Number.isInteger(s) || s < 100)) usage('--scales takes a comma list of instance counts, each at least 100');
  scales.sort((a, b) => a - b);
  const requests = Number(values.requests ?? (quick ? 100 : 300));
  if (!Number.isInteger(requests) || requests < 20) usage('--requests must be an integer of at least 20');
  return {
    quick,
    scales,
    requests,
    warmup: Math.max(5, Math.round(requests / 10)),
    retrieves: quick ? 5 : 10,
    write: Boolean(values.write),
    keep: Boolean(values.keep),
    adminUrl: String(values['admin-url']),
  };
}


const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);

/** Runs the benchmark with the given arguments; resolves with the exit status. */
export async function runQidoWadoBenchmark(argv: string[] = process.argv.slice(2)): Promise<number> {
  const options = parseReadOptions(argv);
  const loadAtStart = os.loadavg();
  const stale = staleBuildWarning(REPO_ROOT);
  if (stale) log(`warning: ${stale}`);
  const workRoot = await mkdtemp(path.join(os.tmpdir(), 'imaging-lake-bench-read-'));
  log(`work directory ${workRoot}`);
  const run: ReadRun = {
    quick: options.quick,
    command: ['npx tsx bench/qido-wado.ts', ...argv].join(' '),
    stamp: '',
    workRoot,
    loadAtStart,
    postgres: { version: '?', sharedBuffers: '?', workMem: '?' },
    serverStartSeconds: 0,
    serverIdleRssBytes: 0,
    realStudiesMB: 0,
    requests: options.requests,
    warmup: options.warmup,
    scales: [],
  };
  let database: BenchDatabase | undefined;
  let server: ServerProcess | undefined;
  let loader: IndexLoader | undefined;
  try {
    database = await createBenchDatabase(options.adminUrl);
    log(`created database ${database.name}`);
    run.postgres = await postgresSettings(database.url);
    const dataDir = await mkdtemp(path.join(workRoot, 'data-'));
    const t0 = performance.now();
    server = await startServer({
      repoRoot: REPO_ROOT,
      env: {
        PORT: String(await findFreePort()),
        HOST: '127.0.0.1',
        DATA_DIR: dataDir,
        DATABASE_URL: database.url,
        LOG_LEVEL: 'warn',
        SWEEP_INTERVAL_SECONDS: '0',
        NODE_ENV: 'production',
      },
    });
    run.serverStartSeconds = (performance.now() - t0) / 1000;
    run.serverIdleRssBytes = readMemory(server.pid)?.rssBytes ?? 0;
    log(`server pid ${server.pid} ready on ${server.baseUrl}`);
    const real = await storeRealStudies(server, log);
    run.realStudiesMB = Object.values(real).reduce((n, s) => n + s.bytes, 0) / 1e6;
    run.diskFloor = await measureDiskFloor(workRoot, real.oct.bytes * options.retrieves);
    loader = await IndexLoader.open(database.url, real);
    const endpoint: DicomwebEndpoint = { name: 'imaging-lake', pid: server.pid, baseUrl: server.baseUrl, root: '/dicomweb', headers: server.headers ?? {} };
    for (const scale of options.scales) {
      const studies = studiesFor(scale);
      log(`scale ${fmt(scale, 0)}: growing the index to ${fmt(studies, 0)} generated studies`);
      const load = await loader.growTo(studies, log);
      const census = await loader.census();
      log(`index: ${fmt(census.instances, 0)} instances, ${fmt(census.studies, 0)} studies, ${fmt(census.tableBytes / 1e6, 0)} MB`);
      const result: ScaleResult = { requestedInstances: scale, census, loadSeconds: load.seconds, vacuumSeconds: load.vacuumSeconds, cases: [] };
      run.scales.push(result);
      const cases = buildReadCases({ studies, studyUid: (k) => loader!.studyUid(k), seriesUid: (k, s) => loader!.seriesUid(k, s), real, retrieves: options.retrieves });
      for (const c of cases) {
        const count = c.fixedCount ?? options.requests;
        const warmup = c.fixedCount ? 1 : options.warmup;
        const m = await measurePhase(server, database, () => runReadSeries(endpoint, count, warmup, (i) => c.make(i), 300_000));
        result.cases.push({ readCase: c, m });
        const st = m.stats;
        log(`  ${c.id}: ${st.failures} failures, ${fmt(st.items / Math.max(1, st.latenciesMs.length), 1)} items/answer`);
      }
      if (census.unfilled > 0) throw new Error(`${census.unfilled} generated studies have unfilled QIDO columns`);
    }
  } catch (err) {
    run.error = String((err as Error)?.stack ?? err);
    log(run.error);
  } finally {
    await loader?.close().catch(() => undefined);
    if (server) {
      await server.stop();
      const exit = server.exited();
      if (exit && exit !== 'exit code 0') log(`server ended with ${exit}`);
    }
    if (database) {
      const name = database.name;
      await database.drop().then(
        () => log(`dropped database ${name}`),
        (err: unknown) => log(`could not drop ${name}: ${String(err)}`),
      );
    }
  }
  run.stamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const section = renderReadRun(run);
  process.stdout.write(`${section}\n\n`);
  if (options.write) {
    const key = `qido-wado-${options.quick ? 'quick' : 'full'}-postgres-fs`;
    updateResultsFile(RESULTS_FILE, key, section);
    log(`updated ${path.relative(REPO_ROOT, RESULTS_FILE)} section ${key}`);
  }
  if (options.keep) log(`kept ${workRoot}`);
  else await rm(workRoot, { recursive: true, force: true });
  const last = run.scales[run.scales.length - 1];
  if (run.error || !last || last.cases.some((c) => c.m.stats.failures > 0)) return 1;
  return last.cases.some((c) => caseVerdict(c) === false) ? 3 : 0;
}

async function postgresSettings(url: string): Promise<ReadRun['postgres']> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    const r = await c.query<{ v: string; sb: string; wm: string }>(
      "SELECT current_setting('server_version') AS v, current_setting('shared_buffers') AS sb, current_setting('work_mem') AS wm",
    );
    return { version: r.rows[0]!.v, sharedBuffers: r.rows[0]!.sb, workMem: r.rows[0]!.wm };
  } finally {
    await c.end();
  }
}

if (require.main === module) {
  runQidoWadoBenchmark()
    .then((code) => process.exit(code))
    .catch((err) => {
      process.stderr.write(`bench/qido-wado.ts: ${(err as Error)?.stack ?? err}\n`);
      process.exit(1);
    });
}
