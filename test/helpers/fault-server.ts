import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { mintLocalToken } from '../../src/auth/local-token';
import { loadConfig, type AppConfig } from '../../src/config';
import { useToken } from './fault-client';
import { startS3Server, type S3TestServer } from './s3-server';
import { startServerProcess, type ServerProcess } from './server-process';
import { createTestDatabase, seedEmbeddedDataDir, testBlobKind, testDbKind } from './test-app';

/**
 * The reliability suite's server fixture: one set of backends (a fresh PostgreSQL database or
 * the embedded engine, the filesystem or a real s3rver bucket) and a DATA_DIR, on which a
 * server child process can be started, killed and started again, as an operator would.
 * Also samples the child's resident memory and open descriptors from /proc.
 */

export interface FaultEnvOptions {
  /** Default: TEST_DB (postgres unless `embedded`). */
  db?: 'postgres' | 'embedded';
  /** Default: TEST_BLOBS (fs unless `s3`). */
  blobs?: 'fs' | 's3';
  /** Use this database instead of creating one (scale-out: two envs, one database). */
  databaseUrl?: string;
  /** Use this S3 server instead of starting one (scale-out: one bucket). */
  s3?: S3TestServer;
  /** Use this DATA_DIR instead of a fresh temp dir (scale-out on one filesystem store). */
  dataDir?: string;
  /** Extra environment for the server. */
  env?: Record<string, string>;
}

export interface FaultEnv {
  readonly dataDir: string;
  /** The environment every server start gets. */
  readonly env: Record<string, string>;
  /** The same configuration the child parses, for in-process checks on the stopped server. */
  readonly config: AppConfig;
  readonly dbKind: 'postgres' | 'embedded';
  readonly blobKind: 'fs' | 's3';
  readonly databaseUrl?: string;
  readonly s3?: S3TestServer;
  /** Starts a server child process on this environment (plus `extra`). */
  start(extra?: Record<string, string>): Promise<FaultServer>;
  /** Stops every server still running, then drops what this env created (database, bucket, DATA_DIR). */
  close(): Promise<void>;
}

/** A running server child process with /proc probes. */
export interface FaultServer {
  readonly baseUrl: string;
  readonly port: number;
  readonly pid: number;
  /** Resident set size in kB (VmRSS), or 0 once the process is gone. */
  rssKb(): number;
  /** Open file descriptors of the process. */
  fdCount(): number;
  /** True while the process has not exited. */
  alive(): boolean;
  /** How the process ended, once it has. */
  exit(): { code: number | null; signal: NodeJS.Signals | null } | null;
  /** Log lines at level error or worse (pino level >= 50), and responses logged with a 5xx status. */
  errorLines(): string[];
  /** SIGKILL and wait. */
  kill(): Promise<void>;
  /** SIGTERM and wait. */
  stop(): Promise<void>;
}

const ROOT = path.resolve(__dirname, '../..');

/** Prepares backends and a DATA_DIR; nothing is started yet. */
export async function createFaultEnv(options: FaultEnvOptions = {}): Promise<FaultEnv> {
  const dbKind = options.databaseUrl ? 'postgres' : (options.db ?? testDbKind());
  const blobKind = options.s3 ? 's3' : (options.blobs ?? testBlobKind());
  const ownsDataDir = !options.dataDir;
  const dataDir = options.dataDir ?? (await mkdtemp(path.join(os.tmpdir(), 'il-rel-')));
  // Empty values count as unset (config.ts), which keeps an outer DATABASE_URL or S3_BUCKET out.
  const env: Record<string, string> = {
    DATA_DIR: dataDir,
    SWEEP_INTERVAL_SECONDS: '0',
    // A fixed issuer: the child listens on a port of its choosing, and tokens minted here must match.
    AUTH_ISSUER: 'http://imaging-lake.reliability.test',
    DATABASE_URL: '',
    S3_BUCKET: '',
    ...options.env,
  };
  let database: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
  let s3 = options.s3;
  let ownsS3 = false;
  try {
    if (dbKind === 'postgres') {
      if (options.databaseUrl) env.DATABASE_URL = options.databaseUrl;
      else {
        database = await createTestDatabase({ migrated: true });
        env.DATABASE_URL = database.url;
      }
    } else if (ownsDataDir) {
      await seedEmbeddedDataDir(dataDir);
    }
    if (blobKind === 's3') {
      if (!s3) {
        s3 = await startS3Server();
        ownsS3 = true;
      }
      Object.assign(env, {
        S3_BUCKET: s3.bucket,
        S3_ENDPOINT: s3.endpoint,
        S3_FORCE_PATH_STYLE: 'true',
        S3_REGION: s3.region,
        AWS_ACCESS_KEY_ID: s3.accessKeyId,
        AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
      });
      // In-process checks (createBlobStore) use the SDK's default credential chain too.
      process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
      process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
    }
  } catch (err) {
    await database?.drop().catch(() => undefined);
    if (ownsS3) await s3?.dispose().catch(() => undefined);
    if (ownsDataDir) await rm(dataDir, { recursive: true, force: true });
    throw err;
  }
  const config = loadConfig({ ...env, LOG_LEVEL: 'silent' });
  const running = new Set<FaultServer>();
  let token: string | undefined;
  return {
    dataDir,
    env,
    config,
    dbKind,
    blobKind,
    databaseUrl: env.DATABASE_URL,
    s3,
    async start(extra = {}) {
      const server = wrap(await startServerProcess({ ...env, ...extra }, 90_000));
      running.add(server);
      // An admin token from the local issuer (the key files under the server's key directory),
      // minted once the server is up so both sides use the key it made; the client helpers send it.
      token ??= (await mintLocalToken({ role: 'admin', ttlSeconds: 86_400 }, { config: config.auth })).accessToken;
      useToken(server.baseUrl, token);
      return server;
    },
    async close() {
      for (const s of running) if (s.alive()) await s.kill();
      if (ownsS3) await s3?.dispose().catch(() => undefined);
      await database?.drop().catch(() => undefined);
      if (ownsDataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

function wrap(proc: ServerProcess): FaultServer {
  const errors: string[] = [];
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  proc.child.once('exit', (code, signal) => (exitInfo = { code, signal }));
  // A second reader on the child's stdout: keep what says the server failed.
  const lines = readline.createInterface({ input: proc.child.stdout! });
  lines.on('line', (line) => {
    if (errors.length >= 200) return;
    try {
      const entry = JSON.parse(line) as {
        level?: number;
        msg?: string;
        url?: string;
        req?: { method?: string; url?: string };
        res?: { statusCode?: number };
        err?: { type?: string; message?: string };
      };
      if ((entry.level ?? 0) >= 50 || (entry.res?.statusCode ?? 0) >= 500) {
        // A compact line (request logs carry every header, bearer token included).
        const status = entry.res?.statusCode !== undefined ? ` "statusCode":${entry.res.statusCode}` : '';
        const where = entry.req ? ` ${entry.req.method} ${entry.req.url}` : entry.url ? ` ${entry.url}` : '';
        const err = entry.err ? ` ${entry.err.type}: ${entry.err.message}` : '';
        errors.push(`level ${entry.level} ${entry.msg}${where}${status}${err}`.slice(0, 1000));
      }
    } catch {
      // not a log line
    }
  });
  proc.child.stderr!.on('data', (d) => {
    if (errors.length < 200) errors.push(`stderr: ${String(d).slice(0, 2000)}`);
  });
  const port = Number(new URL(proc.baseUrl).port);
  return {
    baseUrl: proc.baseUrl,
    port,
    pid: proc.pid,
    rssKb: () => readRssKb(proc.pid),
    fdCount: () => {
      try {
        return fs.readdirSync(`/proc/${proc.pid}/fd`).length;
      } catch {
        return 0;
      }
    },
    alive: () => exitInfo === null,
    exit: () => exitInfo,
    errorLines: () => [...errors],
    kill: () => proc.kill(),
    stop: () => proc.stop(),
  };
}

/** VmRSS of a process in kB (0 when it is gone). */
export function readRssKb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Samples a process's RSS on a timer. */
export interface RssSampler {
  /** All samples so far, kB, with their time (ms since start). */
  readonly samples: Array<{ at: number; kb: number }>;
  /** Largest sample so far, kB. */
  max(): number;
  /** Median of the samples taken in [fromMs, toMs) since start, kB. */
  medianBetween(fromMs: number, toMs: number): number;
  stop(): void;
}

/** Starts sampling `pid`'s VmRSS every `intervalMs`. */
export function sampleRss(pid: number, intervalMs = 100): RssSampler {
  const t0 = Date.now();
  const samples: Array<{ at: number; kb: number }> = [];
  const take = () => {
    const kb = readRssKb(pid);
    if (kb > 0) samples.push({ at: Date.now() - t0, kb });
  };
  take();
  const timer = setInterval(take, intervalMs);
  timer.unref();
  return {
    samples,
    max: () => samples.reduce((m, s) => Math.max(m, s.kb), 0),
    medianBetween(fromMs, toMs) {
      const window = samples.filter((s) => s.at >= fromMs && s.at < toMs).map((s) => s.kb).sort((a, b) => a - b);
      return window.length ? window[Math.floor(window.length / 2)] : 0;
    },
    stop: () => clearInterval(timer),
  };
}

/** Every file under `dir` (relative paths, sorted), skipping the subtrees named in `skip`. */
export function listFiles(dir: string, skip: string[] = []): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(path.join(dir, rel), { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const child = rel ? `${rel}/${e.name}` : e.name;
      if (skip.includes(child)) continue;
      if (e.isDirectory()) walk(child);
      else out.push(child);
    }
  };
  walk('');
  return out.sort();
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** `RELIABILITY_LONG=1` turns on the long variants. */
export function longRun(): boolean {
  return /^(1|true|yes)$/i.test(process.env.RELIABILITY_LONG ?? '');
}

/** Prints a measurement when RELIABILITY_VERBOSE=1 (timings, memory), for tuning the bounds. */
export function report(label: string, data: Record<string, unknown>): void {
  if (/^(1|true|yes)$/i.test(process.env.RELIABILITY_VERBOSE ?? '')) process.stderr.write(`[reliability] ${label} ${JSON.stringify(data)}\n`);
}

/**
 * Runs `imaging-lake sweep --full` as an operator would, on `env` with the given extra
 * settings (e.g. ORPHAN_GRACE_SECONDS=0), and returns its report.
 */
export async function runSweepCli(env: FaultEnv, extra: Record<string, string> = {}): Promise<{ stagingRemoved: number; adopted: number; blobsRemoved: number }> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/main.ts'), 'sweep', '--full'], {
    cwd: ROOT,
    env: { ...process.env, ...env.env, LOG_LEVEL: 'warn', ...extra },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (d: Buffer) => out.push(d));
  child.stderr.on('data', (d: Buffer) => err.push(d));
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  const text = Buffer.concat(out).toString('utf8');
  if (code !== 0) throw new Error(`sweep exited with ${code}: ${Buffer.concat(err).toString('utf8')}${text}`);
  const last = text.trim().split('\n').filter((l) => l.startsWith('{"stagingRemoved"')).pop();
  if (!last) throw new Error(`sweep printed no report: ${text}`);
  return JSON.parse(last);
}

/** Polls `condition` every 10 ms; throws naming `what` if it is not true within `timeoutMs`. */
export async function waitUntil(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}
