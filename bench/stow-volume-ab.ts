import { randomBytes } from 'node:crypto';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'pg';
import { benchCli } from './lib/cli';
import { createOctVolumes } from './lib/instances';
import { openBenchDatabase, type BenchDatabase } from './lib/postgres';
import { readCpuTimes, readMainThreadCpuSeconds, RssSampler } from './lib/process-stats';
import { fmt } from './lib/report';
import { benchServerEnv, findFreePort, startServer, type ServerProcess } from './lib/server-process';
import { buildMultipartBody, createAgent, postStow, quantile, type PreparedRequest } from './lib/stow-client';

/**
 * A/B pairs of the large-volume STOW row (bench/README.md): for each built tree given, in turn
 * (A, B, A, B, ...), a fresh server on a fresh DATA_DIR (and a fresh `il_<letter>_...` database
 * with --db postgres) stores a few untimed OCT volumes, then times more of them one request at a
 * time (concurrency 1). Prints per run: MB/s, server CPU per MB (all threads, and the main thread
 * alone), latency p50, peak RSS; then the medians per tree. The load average goes with each run.
 *
 *   npx tsx bench/stow-volume-ab.ts --trees /work/wt-X-base,/work/wt-X [--pairs 4] [--untimed 3] [--timed 12]
 *                                   [--db embedded|postgres] [--admin-url URL] [--letter x]
 */

const USAGE =
  'usage: npx tsx bench/stow-volume-ab.ts --trees DIR,DIR [--pairs N] [--untimed N] [--timed N] [--db embedded|postgres] [--admin-url URL] [--letter x] [--cpu-prof-dir DIR]\n';
const cli = benchCli('bench/stow-volume-ab.ts', USAGE);
const TIMEOUT_MS = 120_000;

interface RunResult {
  tree: string;
  mbps: number;
  cpuMsPerMB: number;
  mainMsPerMB: number;
  dbMsPerMB?: number;
  p50Ms: number;
  peakRssMB: number;
  failures: number;
  load: string;
}

async function main(): Promise<number> {
  const v = cli.parse(process.argv.slice(2), {
    trees: { type: 'string' },
    pairs: { type: 'string', default: '4' },
    untimed: { type: 'string', default: '3' },
    timed: { type: 'string', default: '12' },
    db: { type: 'string', default: 'embedded' },
    'admin-url': { type: 'string', default: 'postgres://postgres@127.0.0.1:5432/postgres' },
    letter: { type: 'string', default: 'v' },
    'cpu-prof-dir': { type: 'string' },
  });
  const trees = String(v.trees ?? '').split(',').filter(Boolean).map((t) => path.resolve(t));
  if (trees.length === 0) cli.usage('--trees is required');
  const db = String(v.db);
  if (db !== 'embedded' && db !== 'postgres') cli.usage('--db must be embedded or postgres');
  const letter = String(v.letter).toLowerCase();
  if (!/^[a-z][0-9]?$/.test(letter)) cli.usage('--letter must be a letter (optionally with a digit)');
  const pairs = Number(v.pairs);
  const untimed = Number(v.untimed);
  const timed = Number(v.timed);
  const work = await mkdtemp(path.join(os.tmpdir(), `il-${letter}-volab-`));
  const results: RunResult[] = [];
  try {
    // The embedded engine's data directory is created (initdb in WebAssembly, migrations) once, and copied for every run.
    const template = db === 'embedded' ? await embeddedTemplate(trees[0]!, work) : undefined;
    for (let pair = 0; pair < pairs; pair++) {
      for (const tree of trees) {
        const cpuProfDir = v['cpu-prof-dir'] ? path.join(path.resolve(String(v['cpu-prof-dir'])), `${pair + 1}-${path.basename(tree)}`) : undefined;
        const r = await runOnce(tree, { db, adminUrl: String(v['admin-url']), letter, untimed, timed, work, template, cpuProfDir, tag: `${pair}-${path.basename(tree)}` });
        results.push(r);
        process.stdout.write(
          `pair ${pair + 1} ${path.basename(tree)}: ${fmt(r.mbps, 0)} MB/s, server ${fmt(r.cpuMsPerMB, 2)} ms/MB (main ${fmt(r.mainMsPerMB, 2)})` +
            `${r.dbMsPerMB !== undefined ? `, db ${fmt(r.dbMsPerMB, 2)} ms/MB` : ''}, p50 ${fmt(r.p50Ms, 1)} ms, peak RSS ${fmt(r.peakRssMB, 0)} MB, failures ${r.failures}; load ${r.load}\n`,
        );
      }
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  process.stdout.write('\nmedians:\n');
  for (const tree of trees) {
    const rs = results.filter((r) => r.tree === tree);
    const med = (f: (r: RunResult) => number) => quantile(rs.map(f), 0.5);
    process.stdout.write(
      `${path.basename(tree)}: ${fmt(med((r) => r.mbps), 0)} MB/s, server ${fmt(med((r) => r.cpuMsPerMB), 2)} ms/MB (main ${fmt(med((r) => r.mainMsPerMB), 2)})` +
        `${db === 'postgres' ? `, db ${fmt(med((r) => r.dbMsPerMB ?? NaN), 2)} ms/MB` : ''}, p50 ${fmt(med((r) => r.p50Ms), 1)} ms, peak RSS ${fmt(med((r) => r.peakRssMB), 0)} MB\n`,
    );
  }
  return results.some((r) => r.failures > 0) ? 1 : 0;
}

/** Starts and stops a server on a fresh DATA_DIR; returns its embedded engine's directory (`DATA_DIR/pg`). */
async function embeddedTemplate(tree: string, work: string): Promise<string> {
  const dataDir = await mkdtemp(path.join(work, 'template-'));
  const env = { PORT: String(await findFreePort()), HOST: '127.0.0.1', DATA_DIR: dataDir, LOG_LEVEL: 'warn', SWEEP_INTERVAL_SECONDS: '0' };
  const server = await startServer({ repoRoot: tree, env, readyTimeoutMs: 300_000 });
  await server.stop();
  return path.join(dataDir, 'pg');
}

async function runOnce(
  tree: string,
  o: { db: string; adminUrl: string; letter: string; untimed: number; timed: number; work: string; tag: string; template?: string; cpuProfDir?: string },
): Promise<RunResult> {
  const dataDir = await mkdtemp(path.join(o.work, 'data-'));
  if (o.template) await cp(o.template, path.join(dataDir, 'pg'), { recursive: true });
  let database: BenchDatabase | undefined;
  let server: ServerProcess | undefined;
  try {
    const env: Record<string, string> = await benchServerEnv(dataDir);
    if (o.db === 'postgres') {
      const name = `il_${o.letter}_volab_${randomBytes(4).toString('hex')}`;
      const admin = new Client({ connectionString: o.adminUrl });
      await admin.connect();
      try {
        await admin.query(`CREATE DATABASE ${name}`);
      } finally {
        await admin.end();
      }
      database = openBenchDatabase(o.adminUrl, name);
      env.DATABASE_URL = database.url;
    }
    const nodeFlags = o.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${o.cpuProfDir}`] : [];
    server = await startServer({ repoRoot: tree, env, nodeFlags });
    const requests = createOctVolumes(o.untimed + o.timed, o.tag).map((b) => buildMultipartBody([b]));
    const agent = createAgent(1);
    let failures = 0;
    const send = async (r: PreparedRequest) => {
      const out = await postStow(server!, agent, r.body, r.contentType, r.body.length, r.instances, TIMEOUT_MS);
      if (out.problem) {
        failures++;
        process.stderr.write(`${out.problem}\n`);
      }
      return out.ms;
    };
    for (const r of requests.slice(0, o.untimed)) await send(r);
    const timedRequests = requests.slice(o.untimed);
    const dbPids = database ? await database.backendPids() : [];
    const dbCpu0 = dbPids.map((pid) => readCpuTimes(pid));
    const cpu0 = readCpuTimes(server.pid);
    const main0 = readMainThreadCpuSeconds(server.pid);
    const sampler = new RssSampler(server.pid, 20);
    sampler.start();
    const t0 = performance.now();
    const latencies: number[] = [];
    for (const r of timedRequests) latencies.push(await send(r));
    const seconds = (performance.now() - t0) / 1000;
    const rss = sampler.stop();
    const cpu1 = readCpuTimes(server.pid);
    const main1 = readMainThreadCpuSeconds(server.pid);
    agent.destroy();
    const mb = timedRequests.reduce((n, r) => n + r.dicomBytes, 0) / 1e6;
    let dbMsPerMB: number | undefined;
    if (database) {
      const dbCpu1 = dbPids.map((pid) => readCpuTimes(pid));
      let s = 0;
      dbPids.forEach((_, i) => (s += dbCpu1[i]!.user + dbCpu1[i]!.system - dbCpu0[i]!.user - dbCpu0[i]!.system));
      dbMsPerMB = (s * 1000) / mb;
    }
    return {
      tree,
      mbps: mb / seconds,
      cpuMsPerMB: ((cpu1.user + cpu1.system - cpu0.user - cpu0.system) * 1000) / mb,
      mainMsPerMB: ((main1 - main0) * 1000) / mb,
      dbMsPerMB,
      p50Ms: quantile(latencies, 0.5),
      peakRssMB: rss.peakBytes / 1e6,
      failures,
      load: os.loadavg().map((l) => l.toFixed(2)).join(' '),
    };
  } finally {
    await server?.stop();
    await database?.drop().catch(() => undefined);
    await rm(dataDir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`bench/stow-volume-ab.ts: ${(err as Error)?.stack ?? err}\n`);
      process.exit(1);
    },
  );
}
