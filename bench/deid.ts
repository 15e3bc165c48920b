import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createApp, shutdownApp } from '../src/app';
import { createProject } from '../src/auth/project-store';
import { mintLocalToken } from '../src/auth/local-token';
import { loadConfig } from '../src/config';
import { createSyntheticInstance, newUid } from '../src/generate/synthetic-dicom';
import { benchCli } from './lib/cli';
import { createCtSlices } from './lib/instances';
import { createBenchDatabase, type BenchDatabase } from './lib/postgres';
import { describeMachine, fmt, markdownTable, updateResultsFile } from './lib/report';
import { buildMultipartBody } from './lib/stow-client';

/**
 * What de-identification on the fly costs a researcher (issue 6): WADO-RS Retrieve Instance
 * (PS3.18 10.4.1.1.1, multipart/related; type="application/dicom"; transfer-syntax=*) of the
 * same stored instances by an admin (identified: the blob streamed as stored) and by a
 * researcher (path UIDs resolved, header de-identified per PS3.15 Annex E, pixel data streamed
 * unchanged). Small CT slices and ~25 MB instances; blocks alternate between the two callers.
 *
 *   npx tsx bench/deid.ts [--quick] [--small N] [--large N] [--rounds N] [--concurrency N] [--db postgres|embedded] [--admin-url URL] [--write]
 *
 * Exit status: 0 every researcher/admin throughput ratio at or above the target, 3 a target
 * missed, 1 a request failed, 2 bad arguments.
 */

const TARGET_RATIO = 0.8;
const PROJECT = 'bench-deid';
const RESULTS_FILE = path.join(__dirname, 'RESULTS.md');
const ISSUER = 'http://bench.imaging-lake.invalid';
const USAGE = 'usage: npx tsx bench/deid.ts [--quick] [--small N] [--large N] [--rounds N] [--concurrency N] [--db postgres|embedded] [--admin-url URL] [--write]\n';
const LARGE_GEOMETRY = { rows: 2048, columns: 2048, numberOfFrames: 3 } as const; // 3 x 8 MiB of 16-bit pixels

interface Options {
  small: number;
  large: number;
  rounds: number;
  concurrency: number;
  db: 'postgres' | 'embedded';
  adminUrl: string;
  write: boolean;
}

const cli = benchCli('bench/deid.ts', USAGE);
const usage = cli.usage;

function parseOptions(argv: string[]): Options {
  const values = cli.parse(argv, {
    quick: { type: 'boolean', default: false },
    small: { type: 'string' },
    large: { type: 'string' },
    rounds: { type: 'string' },
    concurrency: { type: 'string', default: '4' },
    db: { type: 'string', default: 'postgres' },
    'admin-url': { type: 'string', default: 'postgres://postgres@127.0.0.1:5432/postgres' },
    write: { type: 'boolean', default: false },
    serve: { type: 'boolean', default: false },
  });
  const int = (v: string | undefined, fallback: number, name: string, min: number) => {
    const n = v === undefined ? fallback : Number(v);
    if (!Number.isInteger(n) || n < min) usage(`--${name} must be an integer of at least ${min}`);
    return n;
  };
  const quick = Boolean(values.quick);
  const db = String(values.db);
  if (db !== 'postgres' && db !== 'embedded') usage('--db is postgres or embedded');
  return {
    small: int(values.small, quick ? 100 : 300, 'small', 10),
    large: int(values.large, quick ? 4 : 12, 'large', 1),
    rounds: int(values.rounds, quick ? 2 : 3, 'rounds', 1),
    concurrency: int(values.concurrency, 4, 'concurrency', 1),
    db: db as Options['db'],
    adminUrl: String(values['admin-url']),
    write: Boolean(values.write),
  };
}

/** One instance as each caller addresses it. */
interface Target {
  admin: string;
  researcher: string;
}

interface PassResult {
  seconds: number;
  bytes: number;
  instances: number;
}

/** GETs `path` with keep-alive and counts the body bytes; rejects on a non-200 answer. */
function fetchCount(agent: http.Agent, port: number, token: string, pathname: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      {
        host: '127.0.0.1',
        port,
        path: pathname,
        agent,
        headers: { Authorization: `Bearer ${token}`, Accept: 'multipart/related; type="application/dicom"; transfer-syntax=*' },
      },
      (res) => {
        let bytes = 0;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => {
          bytes += c.length;
          if (res.statusCode !== 200 && chunks.length < 4) chunks.push(c);
        });
        res.on('end', () => (res.statusCode === 200 ? resolve(bytes) : reject(new Error(`GET ${pathname} -> ${res.statusCode}: ${Buffer.concat(chunks).toString('utf8').slice(0, 300)}`))));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
  });
}

/** Retrieves every target once at `concurrency`. */
async function pass(port: number, token: string, paths: string[], concurrency: number): Promise<PassResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  let next = 0;
  let bytes = 0;
  const started = process.hrtime.bigint();
  const worker = async () => {
    while (next < paths.length) {
      const i = next++;
      const n = await fetchCount(agent, port, token, paths[i]);
      bytes += n;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  agent.destroy();
  return { seconds, bytes, instances: paths.length };
}

async function post(port: number, token: string, pathname: string, body: Buffer, headers: Record<string, string>): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: pathname, method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Length': String(body.length), ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function getJson(port: number, token: string, pathname: string): Promise<Array<Record<string, { Value?: unknown[] }>>> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: pathname, headers: { Authorization: `Bearer ${token}`, Accept: 'application/dicom+json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) reject(new Error(`GET ${pathname} -> ${res.statusCode}: ${text.slice(0, 300)}`));
        else resolve(JSON.parse(text));
      });
    }).on('error', reject);
  });
}

/** Stores the instances (in batches of about 64 MB) into the project as admin. */
async function store(port: number, admin: string, files: Buffer[]): Promise<void> {
  let batch: Buffer[] = [];
  let size = 0;
  const flush = async () => {
    if (batch.length === 0) return;
    const { body, contentType } = buildMultipartBody(batch);
    const res = await post(port, admin, '/dicomweb/studies', body, { 'Content-Type': contentType, 'X-Project': PROJECT });
    if (res.status !== 200) throw new Error(`STOW -> ${res.status}: ${res.text.slice(0, 300)}`);
    batch = [];
    size = 0;
  };
  for (const f of files) {
    batch.push(f);
    size += f.length;
    if (size > 64 * 1024 * 1024) await flush();
  }
  await flush();
}

/** The instance paths of each size class (by Rows, which de-identification keeps), as the admin and as the researcher address them. */
async function targetsOf(port: number, admin: string, researcher: string): Promise<{ small: Target[]; large: Target[] }> {
  const paths = async (token: string) => {
    const out = { small: [] as string[], large: [] as string[] };
    const studies = await getJson(port, token, '/dicomweb/studies?limit=1000');
    for (const s of studies) {
      const study = String(s['0020000D']?.Value?.[0]);
      const instances = await getJson(port, token, `/dicomweb/studies/${study}/instances?limit=10000`);
      for (const i of instances) {
        const target = `/dicomweb/studies/${study}/series/${i['0020000E']?.Value?.[0]}/instances/${i['00080018']?.Value?.[0]}`;
        (Number(i['00280010']?.Value?.[0]) === LARGE_GEOMETRY.rows ? out.large : out.small).push(target);
      }
    }
    return out;
  };
  const [a, r] = await Promise.all([paths(admin), paths(researcher)]);
  if (a.small.length !== r.small.length || a.large.length !== r.large.length) {
    throw new Error(`the admin sees ${a.small.length} + ${a.large.length} instances, the researcher ${r.small.length} + ${r.large.length}`);
  }
  return {
    small: a.small.map((admin, i) => ({ admin, researcher: r.small[i] })),
    large: a.large.map((admin, i) => ({ admin, researcher: r.large[i] })),
  };
}

interface Row {
  name: string;
  admin: PassResult;
  researcher: PassResult;
}

/** Alternating blocks (admin first, then researcher first) so that neither gets the warm cache. */
async function measure(port: number, tokens: { admin: string; researcher: string }, targets: Target[], rounds: number, concurrency: number, name: string): Promise<Row> {
  const total = { admin: { seconds: 0, bytes: 0, instances: 0 }, researcher: { seconds: 0, bytes: 0, instances: 0 } };
  // Warm-up: one pass each, not counted.
  await pass(port, tokens.admin, targets.map((t) => t.admin), concurrency);
  await pass(port, tokens.researcher, targets.map((t) => t.researcher), concurrency);
  for (let r = 0; r < rounds; r++) {
    const order: Array<'admin' | 'researcher'> = r % 2 === 0 ? ['admin', 'researcher'] : ['researcher', 'admin'];
    for (const who of order) {
      const res = await pass(port, tokens[who], targets.map((t) => t[who]), concurrency);
      total[who].seconds += res.seconds;
      total[who].bytes += res.bytes;
      total[who].instances += res.instances;
    }
  }
  return { name, ...total };
}

function renderTable(rows: Row[]): string {
  const mbps = (p: PassResult) => p.bytes / 1e6 / p.seconds;
  const ips = (p: PassResult) => p.instances / p.seconds;
  return markdownTable(
    ['instances', 'admin MB/s', 'admin inst/s', 'researcher MB/s', 'researcher inst/s', 'ratio (researcher/admin)'],
    rows.map((r) => [r.name, fmt(mbps(r.admin)), fmt(ips(r.admin)), fmt(mbps(r.researcher)), fmt(ips(r.researcher)), fmt(ips(r.researcher) / ips(r.admin), 2)]),
    ['l', 'r', 'r', 'r', 'r', 'r'],
  );
}

async function serve(): Promise<void> {
  const handle = await createApp(loadConfig(process.env));
  await createProject(handle.db.knex, { id: PROJECT, name: 'de-identification benchmark' });
  const server = http.createServer(handle.express);
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  process.send!({ port: (server.address() as AddressInfo).port });
  process.on('disconnect', () => {
    server.close();
    void shutdownApp(handle).finally(() => process.exit(0));
  });
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'il-bench-deid-'));
  let database: BenchDatabase | undefined;
  let child: ChildProcess | undefined;
  const loadAtStart = os.loadavg();
  let status = 0;
  try {
    if (options.db === 'postgres') database = await createBenchDatabase(options.adminUrl);
    const env: Record<string, string> = {
      DATA_DIR: dataDir,
      AUTH_ISSUER: ISSUER,
      LOG_LEVEL: 'warn',
      SWEEP_INTERVAL_SECONDS: '0',
      ...(database ? { DATABASE_URL: database.url } : {}),
    };
    // The server runs in its own process, so the load generator does not share its event loop.
    child = fork(__filename, ['--serve'], { env: { ...process.env, ...env }, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    const { port } = await new Promise<{ port: number }>((resolve, reject) => {
      child!.once('message', (m) => resolve(m as { port: number }));
      child!.once('exit', (code) => reject(new Error(`the server process exited with ${code}`)));
    });
    const auth = loadConfig(env).auth;
    const admin = (await mintLocalToken({ role: 'admin', ttlSeconds: 3600 }, { config: auth })).accessToken;
    const researcher = (await mintLocalToken({ role: 'researcher', projects: [PROJECT], ttlSeconds: 3600 }, { config: auth })).accessToken;

    const tag = randomUUID().slice(0, 8);
    process.stderr.write(`storing ${options.small} CT slices and ${options.large} instances of ~25 MB (${options.db})\n`);
    await store(port, admin, createCtSlices(options.small, 100, tag));
    const largeStudy = newUid();
    for (let i = 0; i < options.large; i++) {
      const bytes = createSyntheticInstance({
        studyInstanceUID: largeStudy,
        modality: 'CT',
        patientID: `BENCH-LARGE-${tag}`,
        patientName: `Bench^Large^${tag}`,
        studyDescription: 'Benchmark large',
        instanceNumber: i + 1,
        bitsAllocated: 16,
        seed: i + 1,
        ...LARGE_GEOMETRY,
      }).bytes;
      await store(port, admin, [bytes]);
    }
    const { small, large } = await targetsOf(port, admin, researcher);
    if (small.length !== options.small || large.length !== options.large) throw new Error(`stored ${small.length} small and ${large.length} large instances, expected ${options.small} and ${options.large}`);

    process.stderr.write(`measuring ${options.rounds} rounds per caller at concurrency ${options.concurrency}\n`);
    const tokens = { admin, researcher };
    const rows = [
      await measure(port, tokens, small, options.rounds, options.concurrency, `${small.length} CT slices (~34 kB)`),
      await measure(port, tokens, large, options.rounds, options.concurrency, `${large.length} large (~25 MB)`),
    ];
    const table = renderTable(rows);
    const ratios = rows.map((r) => r.researcher.instances / r.researcher.seconds / (r.admin.instances / r.admin.seconds));
    const worst = Math.min(...ratios);
    const verdict = worst >= TARGET_RATIO ? `met: worst ratio ${fmt(worst, 2)}` : `missed: worst ratio ${fmt(worst, 2)}, target at least ${TARGET_RATIO}`;
    if (worst < TARGET_RATIO) status = 3;
    const engine = database ? `PostgreSQL ${await database.serverVersion()}` : 'embedded PostgreSQL (PGlite)';
    process.stdout.write(`\nWADO-RS Retrieve Instance, researcher (de-identified on the fly) vs admin (as stored), ${engine}, concurrency ${options.concurrency}\n\n${table}\n\nTarget (researcher/admin >= ${TARGET_RATIO}): ${verdict}\n`);
    if (options.write) {
      const date = new Date().toISOString().slice(0, 10);
      const section = [
        `## De-identification on retrieve (${engine}), ${date}`,
        '',
        `\`npx tsx bench/deid.ts --small ${options.small} --large ${options.large} --rounds ${options.rounds} --concurrency ${options.concurrency}${options.db === 'embedded' ? ' --db embedded' : ''} --write\`. One server process; the same instances retrieved one per request (multipart/related; type="application/dicom"; transfer-syntax=*) by an admin (identified, streamed as stored) and by a researcher of the project (UIDs resolved, header de-identified, pixel data streamed unchanged), in alternating blocks after one warm-up pass each. Ratio = researcher/admin instances per second.`,
        '',
        table,
        '',
        `Target (>= ${TARGET_RATIO}): ${verdict}`,
        '',
        ...describeMachine(dataDir, loadAtStart),
      ].join('\n');
      updateResultsFile(RESULTS_FILE, `deid-${options.db}-${date}`, section);
    }
  } catch (err) {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    status = 1;
  } finally {
    child?.disconnect();
    await new Promise((r) => setTimeout(r, 500));
    await database?.drop().catch(() => undefined);
    await rm(dataDir, { recursive: true, force: true });
  }
  process.exit(status);
}

if (process.argv.includes('--serve')) void serve();
else void main();
