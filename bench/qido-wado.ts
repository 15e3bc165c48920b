import { writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'pg';
import { IndexLoader } from './lib/index-loader';
import { studiesFor } from './lib/index-population';
import { measureDiskFloor } from './lib/machine-floor';
import { measurePhase } from './lib/phase-meter';
import { createBenchDatabase, openBenchDatabase, type BenchDatabase } from './lib/postgres';
import { readMemory } from './lib/process-stats';
import { buildReadCases } from './lib/qido-wado-cases';
import { loadKeptIndex, saveKeptIndex, type KeptReadIndex } from './lib/qido-wado-state';
import { caseVerdict, renderReadRun, type ReadRun, type ScaleResult } from './lib/qido-wado-report';
import { runReadSeries, type DicomwebEndpoint } from './lib/read-client';
import { storeRealStudies } from './lib/real-studies';
import { fmt, updateResultsFile } from './lib/report';
import { findFreePort, staleBuildWarning, startServer, type ServerProcess } from './lib/server-process';
import { benchCli } from './lib/cli';
import { quantile } from './lib/stow-client';

/**
 * QIDO-RS / WADO-RS latency at scale (bench/README.md). Starts the built server on a fresh
 * PostgreSQL database, stores one real study of each kind through STOW-RS, then grows the
 * index with SQL clones of them (10 instances per study) to each scale in turn and measures
 * searches, metadata, single frames and study retrieves at each.
 *
 *   npx tsx bench/qido-wado.ts [--quick] [--scales 10000,100000,1000000] [--requests N] [--write] [--keep] [--admin-url URL]
 *                              [--keep-db FILE | --reuse FILE] [--server-root DIR] [--only case,case] [--cpu-prof DIR]
 *                              [--rounds N] [--node-flags=FLAGS] [--server-log FILE] [--samples FILE]
 *
 * Exit status: 0 all targets met at the largest scale, 3 only performance targets missed,
 * 1 a request failed or the index was not filled as planned, 2 bad arguments.
 */

const REPO_ROOT = path.resolve(__dirname, '..');
const RESULTS_FILE = path.join(__dirname, 'RESULTS.md');
const USAGE =
  'usage: npx tsx bench/qido-wado.ts [--quick] [--scales N,N,...] [--requests N] [--write] [--keep] [--admin-url URL]\n' +
  '                                  [--keep-db FILE | --reuse FILE] [--server-root DIR] [--only case,case] [--cpu-prof DIR]\n' +
  '                                  [--rounds N] [--node-flags=FLAGS] [--server-log FILE] [--samples FILE]\n';
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
  /** Keep the database and DATA_DIR, and describe them in this file. */
  keepDb?: string;
  /** Measure again on the index a `--keep-db` run kept (and keep it). */
  reuse?: string;
  /** The directory whose dist/main.js is run (default: this repository), for A/B runs of two builds. */
  serverRoot: string;
  /** Case ids to run (default: all). */
  only?: string[];
  /** Run the server under `node --cpu-prof`, writing its profile into this directory. */
  cpuProfDir?: string;
  /** Times the cases are measured at each scale, one round after the other on the same server. */
  rounds: number;
  /** Extra node flags for the server (a flag named here replaces the same flag from bin/server-node-flags.js). */
  nodeFlags: string[];
  /** Write the server's output (e.g. its --trace-gc lines) into this file. */
  serverLog?: string;
  /** Write every timed request (total, time to the answer's head, the load generator's GC inside it) into this JSON file. */
  samples?: string;
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
    'keep-db': { type: 'string' },
    reuse: { type: 'string' },
    'server-root': { type: 'string' },
    only: { type: 'string' },
    'cpu-prof': { type: 'string' },
    rounds: { type: 'string', default: '1' },
    'node-flags': { type: 'string', default: '' },
    'server-log': { type: 'string' },
    samples: { type: 'string' },
  });
  if (values['keep-db'] && values.reuse) usage('--keep-db and --reuse exclude each other (--reuse keeps the index anyway)');
  if (values.db !== 'postgres') usage('only --db postgres is supported: the index is filled with SQL on a PostgreSQL server');
  const quick = Boolean(values.quick);
  const scales = String(values.scales ?? (quick ? '100000' : '10000,100000,1000000'))
    .split(',')
    .map((s) => Number(s.trim().replace(/_/g, '')));
  if (scales.some((s) => !Number.isInteger(s) || s < 100)) usage('--scales takes a comma list of instance counts, each at least 100');
  scales.sort((a, b) => a - b);
  const requests = Number(values.requests ?? (quick ? 100 : 300));
  if (!Number.isInteger(requests) || requests < 20) usage('--requests must be an integer of at least 20');
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) usage('--rounds must be a positive integer');
  return {
    quick,
    scales,
    requests,
    warmup: Math.max(5, Math.round(requests / 10)),
    retrieves: quick ? 5 : 10,
    write: Boolean(values.write),
    keep: Boolean(values.keep),
    adminUrl: String(values['admin-url']),
    keepDb: values['keep-db'] ? path.resolve(String(values['keep-db'])) : undefined,
    reuse: values.reuse ? path.resolve(String(values.reuse)) : undefined,
    serverRoot: path.resolve(String(values['server-root'] ?? REPO_ROOT)),
    only: values.only ? String(values.only).split(',').map((s) => s.trim()) : undefined,
    cpuProfDir: values['cpu-prof'] ? path.resolve(String(values['cpu-prof'])) : undefined,
    rounds,
    nodeFlags: String(values['node-flags']).split(/\s+/).filter(Boolean),
    serverLog: values['server-log'] ? path.resolve(String(values['server-log'])) : undefined,
    samples: values.samples ? path.resolve(String(values.samples)) : undefined,
  };
}


const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);

/** Runs the benchmark with the given arguments; resolves with the exit status. */
export async function runQidoWadoBenchmark(argv: string[] = process.argv.slice(2)): Promise<number> {
  const options = parseReadOptions(argv);
  const loadAtStart = os.loadavg();
  const stale = options.serverRoot === REPO_ROOT ? staleBuildWarning(REPO_ROOT) : null;
  if (stale) log(`warning: ${stale}`);
  const kept: KeptReadIndex | undefined = options.reuse ? loadKeptIndex(options.reuse) : undefined;
  // A kept index is kept once its state file is written (a failure before that drops it).
  let keepIndex = Boolean(kept);
  const workRoot = kept?.workRoot ?? (await mkdtemp(path.join(os.tmpdir(), 'imaging-lake-bench-read-')));
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
    database = kept ? openBenchDatabase(kept.adminUrl, kept.databaseName) : await createBenchDatabase(options.adminUrl);
    log(`${kept ? 'reusing' : 'created'} database ${database.name}`);
    run.postgres = await postgresSettings(database.url);
    const dataDir = kept?.dataDir ?? (await mkdtemp(path.join(workRoot, 'data-')));
    const t0 = performance.now();
    server = await startServer({
      repoRoot: options.serverRoot,
      nodeFlags: [...(options.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfDir}`] : []), ...options.nodeFlags],
      logFile: options.serverLog,
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
    const real = kept?.real ?? (await storeRealStudies(server, log));
    run.realStudiesMB = Object.values(real).reduce((n, s) => n + s.bytes, 0) / 1e6;
    run.diskFloor = await measureDiskFloor(workRoot, real.oct.bytes * options.retrieves);
    loader = await IndexLoader.open(database.url, real, kept?.loader);
    const keepState = (l: IndexLoader) => {
      const file = options.keepDb ?? options.reuse!;
      saveKeptIndex(file, { adminUrl: kept?.adminUrl ?? options.adminUrl, databaseName: database!.name, workRoot, dataDir, real, loader: l.state() });
      keepIndex = true;
      log(`kept database ${database!.name} and ${workRoot}: ${file}`);
    };
    const endpoint: DicomwebEndpoint = { name: 'imaging-lake', pid: server.pid, baseUrl: server.baseUrl, root: '/dicomweb', headers: server.headers ?? {} };
    const samples: Array<{ scale: number; round: number; case: string; ms: number[]; headMs: number[]; clientGcMs: number[] }> = [];
    const rounds = options.scales.flatMap((scale) => Array.from({ length: options.rounds }, (_, round) => ({ scale, round })));
    for (const { scale, round } of rounds) {
      const studies = studiesFor(scale);
      log(`scale ${fmt(scale, 0)}: growing the index to ${fmt(studies, 0)} generated studies`);
      const load = await loader.growTo(studies, log);
      if (options.keepDb || kept) keepState(loader);
      const census = await loader.census();
      log(`index: ${fmt(census.instances, 0)} instances, ${fmt(census.studies, 0)} studies, ${fmt(census.tableBytes / 1e6, 0)} MB`);
      const result: ScaleResult = { requestedInstances: scale, census, loadSeconds: load.seconds, vacuumSeconds: load.vacuumSeconds, cases: [] };
      run.scales.push(result);
      const cases = buildReadCases({ studies, studyUid: (k) => loader!.studyUid(k), seriesUid: (k, s) => loader!.seriesUid(k, s), real, retrieves: options.retrieves });
      for (const c of cases.filter((x) => !options.only || options.only.includes(x.id))) {
        const count = c.fixedCount ?? options.requests;
        const warmup = c.fixedCount ? 1 : options.warmup;
        const m = await measurePhase(server, database, () => runReadSeries(endpoint, count, warmup, (i) => c.make(i), 300_000));
        result.cases.push({ readCase: c, m });
        const st = m.stats;
        log(`  ${c.id}: ${st.failures} failures, ${fmt(st.items / Math.max(1, st.latenciesMs.length), 1)} items/answer; ${describeTail(st)}`);
        samples.push({ scale, round, case: c.id, ms: st.latenciesMs, headMs: st.headMs ?? [], clientGcMs: st.clientGcMs ?? [] });
      }
      if (options.samples) writeFileSync(options.samples, JSON.stringify(samples));
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
    if (database && keepIndex) {
      log(`database ${database.name} kept (drop it with DROP DATABASE ${database.name} WITH (FORCE), and rm -rf ${workRoot})`);
    } else if (database) {
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
  if (options.keep || keepIndex) log(`kept ${workRoot}`);
  else await rm(workRoot, { recursive: true, force: true });
  const last = run.scales[run.scales.length - 1];
  if (run.error || !last || last.cases.some((c) => c.m.stats.failures > 0)) return 1;
  return last.cases.some((c) => caseVerdict(c) === false) ? 3 : 0;
}

/**
 * Where a series' slowest requests spent their time: p50 / p95 of the whole request, of the time
 * to the answer's head, and of the whole request less the load generator's own garbage
 * collection inside it, with how many requests had any such collection.
 */
function describeTail(st: { latenciesMs: number[]; headMs?: number[]; clientGcMs?: number[] }): string {
  const q = quantile;
  const gc = st.clientGcMs ?? [];
  const net = st.latenciesMs.map((ms, i) => ms - (gc[i] ?? 0));
  const head = st.headMs ?? [];
  return (
    `p50/p95 ms ${fmt(q(st.latenciesMs, 0.5), 1)} / ${fmt(q(st.latenciesMs, 0.95), 1)}; to head ${fmt(q(head, 0.5), 1)} / ${fmt(q(head, 0.95), 1)}; ` +
    `less client GC ${fmt(q(net, 0.5), 1)} / ${fmt(q(net, 0.95), 1)} (client GC in ${gc.filter((x) => x > 0).length} requests, ${fmt(gc.reduce((a, b) => a + b, 0), 1)} ms)`
  );
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
