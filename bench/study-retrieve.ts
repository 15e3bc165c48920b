import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'pg';
import { randomBytes } from 'node:crypto';
import { benchCli } from './lib/cli';
import { prepareCtSeries } from './lib/compare-data';
import { measurePhase } from './lib/phase-meter';
import { openBenchDatabase, type BenchDatabase } from './lib/postgres';
import { ACCEPT, runReadSeries, type DicomwebEndpoint, type ReadStats } from './lib/read-client';
import { prepareRealStudy } from './lib/real-studies';
import { benchServerEnv, staleBuildWarning, startServer, type ServerProcess } from './lib/server-process';
import { sendAll, type PreparedRequest } from './lib/stow-client';

/**
 * WADO-RS study retrieve, A/B: the same studies stored in two builds (a base and this
 * repository), then blocks of retrieves sent to one and the other in turn (base, new, new, base,
 * ...), each block measured for throughput and server CPU per MB (all threads, the main thread
 * alone, and the PostgreSQL backends serving it). Quicker than bench/orthanc.ts for one row.
 *
 *   npx tsx bench/study-retrieve.ts [--base DIR] [--db embedded|postgres] [--pairs N] [--retrieves N] [--warmup N]
 *                                   [--cases ct,oct] [--cpu-prof DIR] [--admin-url URL] [--keep]
 */

const REPO_ROOT = path.resolve(__dirname, '..');
const USAGE =
  'usage: npx tsx bench/study-retrieve.ts [--base DIR] [--db embedded|postgres] [--pairs N] [--retrieves N] [--warmup N]\n' +
  '                                       [--cases ct,oct] [--cpu-prof DIR] [--admin-url URL] [--keep] [--env K=V ...] [--server-log FILE]\n' +
  '  --base DIR     a second build to compare with (DIR/dist/main.js, e.g. a worktree of main); without it only this build runs\n' +
  '  --db           embedded PGlite (default) or a fresh database il_r_<random> on the PostgreSQL server at --admin-url\n' +
  '  --pairs N      blocks per build and case (default 4), alternating which build goes first\n' +
  '  --retrieves N  timed retrieves per block (default 20), after --warmup untimed ones (default 3)\n' +
  '  --cases        ct (100 CT slices of ~34 kB in one study) and/or oct (2 OPT volumes + 2 OP images), default both\n' +
  '  --cpu-prof DIR run the servers under node --cpu-prof, profiles written into DIR/base and DIR/new when they stop\n' +
  '  --env K=V      extra environment for both servers (repeatable, e.g. DEBUG=knex:query); --server-log FILE: their output in FILE.base, FILE.new\n';
const cli = benchCli('bench/study-retrieve.ts', USAGE);

interface Side {
  name: string;
  root: string;
  server: ServerProcess;
  endpoint: DicomwebEndpoint;
  db?: BenchDatabase;
  dataDir: string;
}

interface Block {
  side: string;
  caseId: string;
  mbPerS: number;
  cpuMsPerMb: number;
  mainMsPerMb: number;
  dbMsPerMb: number | undefined;
  load: number;
  /** CPU seconds by thread name (main thread: node; libuv's pool: libuv-worker; V8's helpers: V8 DefaultWorke). */
  threads: Array<[string, number]>;
}

async function main(): Promise<void> {
  const values = cli.parse(process.argv.slice(2), {
    base: { type: 'string' },
    db: { type: 'string', default: 'embedded' },
    pairs: { type: 'string', default: '4' },
    retrieves: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '3' },
    cases: { type: 'string', default: 'ct,oct' },
    'cpu-prof': { type: 'string' },
    'admin-url': { type: 'string', default: 'postgres://postgres@127.0.0.1:5432/postgres' },
    keep: { type: 'boolean', default: false },
    env: { type: 'string', multiple: true },
    'server-log': { type: 'string' },
  });
  const db = String(values.db);
  if (db !== 'embedded' && db !== 'postgres') cli.usage(`--db must be embedded or postgres, not ${db}`);
  const pairs = Number(values.pairs);
  const retrieves = Number(values.retrieves);
  const warmup = Number(values.warmup);
  if (!(pairs >= 1 && retrieves >= 1 && warmup >= 0)) cli.usage('--pairs and --retrieves must be >= 1, --warmup >= 0');
  const cases = String(values.cases).split(',');
  if (cases.some((c) => c !== 'ct' && c !== 'oct')) cli.usage('--cases takes ct and/or oct');
  const cpuProf = values['cpu-prof'] ? path.resolve(String(values['cpu-prof'])) : undefined;
  const adminUrl = String(values['admin-url']);

  const roots: Array<[string, string]> = [['new', REPO_ROOT]];
  if (values.base) roots.unshift(['base', path.resolve(String(values.base))]);
  for (const [, root] of roots) {
    const stale = staleBuildWarning(root);
    if (stale) process.stderr.write(`warning (${root}): ${stale}\n`);
  }

  const ct = prepareCtSeries(100, 100, 50, 'sr');
  const ctStudy = ct.series[0]!;
  const ctBytes = ctStudy.instances.reduce((n, i) => n + i.bytes, 0);
  const oct = prepareRealStudy('oct');
  const studies: Record<string, { uid: string; bytes: number; requests: PreparedRequest[] }> = {
    ct: { uid: ctStudy.studyInstanceUID, bytes: ctBytes, requests: ct.requests },
    oct: { uid: oct.study.studyInstanceUID, bytes: oct.study.bytes, requests: oct.requests },
  };

  const work = await mkdtemp(path.join(os.tmpdir(), 'il-R-retrieve-'));
  const sides: Side[] = [];
  try {
    for (const [name, root] of roots) {
      const dataDir = path.join(work, name);
      const env: Record<string, string> = await benchServerEnv(dataDir);
      for (const kv of (values.env as string[] | undefined) ?? []) env[kv.slice(0, kv.indexOf('='))] = kv.slice(kv.indexOf('=') + 1);
      let database: BenchDatabase | undefined;
      if (db === 'postgres') {
        const dbName = `il_r_${randomBytes(5).toString('hex')}`;
        const c = new Client({ connectionString: adminUrl });
        await c.connect();
        await c.query(`CREATE DATABASE ${dbName}`);
        await c.end();
        database = openBenchDatabase(adminUrl, dbName);
        env.DATABASE_URL = database.url;
      }
      const nodeFlags = cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${path.join(cpuProf, name)}`] : [];
      const server = await startServer({ repoRoot: root, env, nodeFlags, logFile: values['server-log'] ? `${String(values['server-log'])}.${name}` : undefined });
      const endpoint: DicomwebEndpoint = { name, pid: server.pid, baseUrl: server.baseUrl, root: '/dicomweb', headers: server.headers ?? {} };
      sides.push({ name, root, server, endpoint, db: database, dataDir });
      for (const c of cases) {
        const st = await sendAll({ baseUrl: server.baseUrl, headers: server.headers }, studies[c]!.requests, 1, 300_000);
        if (st.failures) throw new Error(`${name}: storing the ${c} study failed: ${st.failureSamples.join('; ')}`);
      }
      log(`${name}: ${root}, pid ${server.pid}, ${db}; stored ${cases.join(' and ')}`);
    }

    const blocks: Block[] = [];
    for (let p = 0; p < pairs; p++) {
      const order = p % 2 === 0 ? sides : [...sides].reverse();
      for (const c of cases) {
        for (const side of order) {
          const s = studies[c]!;
          const make = () => ({
            path: `/dicomweb/studies/${s.uid}`,
            accept: ACCEPT.instances,
            check: (o: { bytes: number }) => (o.bytes >= s.bytes ? 1 : `answer of ${o.bytes} bytes, fewer than the ${s.bytes} stored`),
          });
          if (warmup > 0) await runReadSeries(side.endpoint, 0, warmup, make);
          const threads0 = threadCpu(side.server.pid);
          const m = await measurePhase(side.server, side.db, () => runReadSeries(side.endpoint, retrieves, 0, make));
          const threads1 = threadCpu(side.server.pid);
          const stats = m.stats as ReadStats;
          if (stats.failures) throw new Error(`${side.name} ${c}: ${stats.failureSamples.join('; ')}`);
          const mb = stats.bytes / 1e6;
          const seconds = stats.latenciesMs.reduce((a, b) => a + b, 0) / 1000;
          const b: Block = {
            side: side.name,
            caseId: c,
            mbPerS: mb / seconds,
            cpuMsPerMb: (m.serverCpuSeconds * 1000) / mb,
            mainMsPerMb: ((m.serverMainThreadCpuSeconds ?? NaN) * 1000) / mb,
            dbMsPerMb: m.dbCpuSeconds === undefined ? undefined : (m.dbCpuSeconds * 1000) / mb,
            load: os.loadavg()[0]!,
            threads: [...threads1].map(([k, v]) => [k, v - (threads0.get(k) ?? 0)] as [string, number]).filter(([, v]) => v > 0),
          };
          blocks.push(b);
          log(
            `pair ${p + 1} ${c.padEnd(3)} ${side.name.padEnd(4)}: ${b.mbPerS.toFixed(1).padStart(6)} MB/s, server CPU ${b.cpuMsPerMb.toFixed(2)} ms/MB ` +
              `(main thread ${b.mainMsPerMb.toFixed(2)})${b.dbMsPerMb === undefined ? '' : `, PostgreSQL ${b.dbMsPerMb.toFixed(2)} ms/MB`}, load ${b.load.toFixed(2)}; ` +
              `by thread ms/MB: ${b.threads.map(([k, v]) => `${k} ${((v * 1000) / mb).toFixed(2)}`).join(', ')}`,
          );
        }
      }
    }
    for (const c of cases) {
      process.stdout.write(`\n${c} (${(studies[c]!.bytes / 1e6).toFixed(1)} MB), medians of ${pairs} blocks of ${retrieves}:\n`);
      for (const side of sides) {
        const mine = blocks.filter((b) => b.side === side.name && b.caseId === c);
        const dbs = mine.map((b) => b.dbMsPerMb).filter((x): x is number => x !== undefined);
        process.stdout.write(
          `  ${side.name.padEnd(4)} ${median(mine.map((b) => b.mbPerS)).toFixed(1)} MB/s, server CPU ${median(mine.map((b) => b.cpuMsPerMb)).toFixed(2)} ms/MB, ` +
            `main thread ${median(mine.map((b) => b.mainMsPerMb)).toFixed(2)} ms/MB${dbs.length ? `, PostgreSQL ${median(dbs).toFixed(2)} ms/MB` : ''}\n`,
        );
      }
    }
  } finally {
    for (const side of sides) {
      await side.server.stop();
      await side.db?.drop().catch(() => undefined);
    }
    if (!values.keep) await rm(work, { recursive: true, force: true });
    else log(`kept ${work}`);
  }
}

/** CPU seconds of a process's threads, summed by thread name (/proc/<pid>/task/<tid>/stat). */
function threadCpu(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const text = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1');
      const name = text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));
      const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
      out.set(name, (out.get(name) ?? 0) + (Number(fields[11]) + Number(fields[12])) / 100);
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function log(line: string): void {
  process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
