import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import { spawn } from 'node:child_process';
import { PGlite, type PGliteOptions, type Results } from '@electric-sql/pglite';
import knexFactory, { type Knex } from 'knex';
import ClientPgLite from 'knex-pglite';
import type { AppConfig } from '../config';
import type { Logger } from '../logger';
import { EmbeddedStatements } from './embedded-statements';

/** The index: a knex instance over PostgreSQL (server or the embedded PGlite engine). */
export interface Database {
  readonly knex: Knex;
  readonly kind: 'postgres' | 'embedded';
  /** Throws when the database cannot answer a trivial query. */
  checkHealth(): Promise<void>;
  close(): Promise<void>;
}

/** PostgreSQL error codes worth retrying a whole transaction for. */
const RETRYABLE_CODES = new Set(['40001', '40P01', '57P01', '57P02', '57P03', '08006', '08003', '08000']);

/** Connects to the configured database. The embedded engine keeps its files under `DATA_DIR/pg`. */
export function createDatabase(cfg: AppConfig['database'], logger: Logger): Database {
  let knex: Knex;
  if (cfg.kind === 'postgres') {
    knex = knexFactory({
      client: 'pg',
      // TCP keepalive finds a connection whose peer vanished without closing it (a failover
      // behind a load balancer); a restarted server closes its connections, which marks them
      // disposed, and the pool replaces a disposed connection when it is next acquired.
      connection: { connectionString: cfg.url, application_name: 'imaging-lake', keepAlive: true, keepAliveInitialDelayMillis: 30_000 },
      // Idle connections are kept for minutes, not seconds: a new backend plans the ingest
      // statements afresh (custom plans for its first executions, 1-3 ms each, the first
      // 8-50 ms), so a sender that pauses between bursts would pay that again every burst.
      pool: { min: 0, max: cfg.poolMax, idleTimeoutMillis: cfg.poolIdleSeconds * 1000, acquireTimeoutMillis: 30_000 },
      acquireConnectionTimeout: 30_000,
      log: knexLog(logger),
    });
  } else {
    fs.mkdirSync(path.dirname(cfg.dir), { recursive: true });
    lockEmbeddedDirectory(cfg.dir);
    const pglite = new EmbeddedEngine(cfg.dir, embeddedOptions(cfg.sharedBuffersMb));
    knex = knexFactory({
      client: EmbeddedClient,
      dialect: 'postgres',
      connection: { pglite },
      acquireConnectionTimeout: ENGINE_START_TIMEOUT_MS,
      log: knexLog(logger),
    } as Knex.Config);
  }
  logger.info({ database: cfg.kind }, 'database configured');
  return {
    knex,
    kind: cfg.kind,
    async checkHealth() {
      await knex.raw('select 1');
    },
    async close() {
      await knex.destroy();
      if (cfg.kind === 'embedded') unlockEmbeddedDirectory(cfg.dir);
    },
  };
}

/**
 * knex's own messages (a pooled connection found closed, deprecations) through the server's
 * logger instead of the console.
 */
function knexLog(logger: Logger): Knex.Config['log'] {
  return {
    warn: (message: unknown) => logger.warn({ source: 'knex' }, String(message)),
    error: (message: unknown) => logger.error({ source: 'knex' }, String(message)),
    deprecate: (method: string, alternative: string) => logger.warn({ source: 'knex' }, `${method} is deprecated, use ${alternative}`),
    debug: (message: unknown) => logger.debug({ source: 'knex' }, String(message)),
  };
}

/**
 * Start-up settings of the embedded engine: PGlite's own flags plus smaller memory than
 * PostgreSQL's server defaults (shared_buffers 128 MB, wal_buffers 4 MB, temp_buffers 8 MB).
 * Inside the engine's WebAssembly memory those buffers stay resident for the life of the server
 * process; a single-process index is well served by less, and the operating system's page cache
 * keeps its files warm. work_mem stays at the default 4 MB (sorts of QIDO pages).
 * `sharedBuffersMb` (EMBEDDED_SHARED_BUFFERS_MB, default 16) trades memory for speed once the
 * index outgrows the buffers: each page the engine misses is a file read through its
 * WebAssembly filesystem layer. Two engines loaded side by side with the same 150,000 small
 * instances: 128 MB kept 580-630 instances/s where 16 MB fell to 425 (bench/RESULTS.md).
 */
function embeddedOptions(sharedBuffersMb = 16): PGliteOptions {
  return {
    startParams: [
      ...PGlite.defaultStartParams,
      ...[`shared_buffers=${sharedBuffersMb}MB`, 'wal_buffers=1MB', 'temp_buffers=1MB', 'work_mem=4MB', 'maintenance_work_mem=16MB'].flatMap((s) => ['-c', s]),
    ],
  };
}

/**
 * The first query waits for the engine to start and, on first use, for its database to be
 * created (initdb in WebAssembly): over half a minute on a busy machine, past knex's default
 * connection timeouts.
 */
const ENGINE_START_TIMEOUT_MS = 300_000;

/** knex-pglite, whose pool cannot be configured from outside, with room for the engine's start. */
class EmbeddedClient extends ClientPgLite {
  override poolDefaults() {
    return { ...super.poolDefaults(), createTimeoutMillis: ENGINE_START_TIMEOUT_MS };
  }

  /**
   * knex-pglite names a result's command after knex's method, and knex calls a delete `del`:
   * 'DEL', which knex's PostgreSQL client does not take for a DELETE, so `.delete()` answered
   * the whole result instead of the number of rows deleted (always truthy). Named as a delete.
   */
  processResponse(obj: { method?: string }, runner: unknown): unknown {
    const base = ClientPgLite.prototype as unknown as { processResponse(obj: unknown, runner: unknown): unknown };
    return base.processResponse.call(this, obj.method === 'del' ? { ...obj, method: 'delete' } : obj, runner);
  }
}

/**
 * Creating a new data directory (initdb in WebAssembly) peaks at some 700 MB and leaves
 * hundreds of MB in the allocator's arenas of whichever process ran it, even from a worker
 * thread that has exited: it runs in a child process instead, which gives everything back
 * when it exits. It builds the directory under a temporary name and renames it into place,
 * so a start interrupted during initdb never leaves a half-made data directory behind.
 */
const INIT_SCRIPT = `
const [moduleId, dir, options] = JSON.parse(process.argv[1]);
const { PGlite } = require(moduleId);
const db = new PGlite(dir, options);
db.waitReady.then(() => db.close()).catch((err) => { process.stderr.write(String(err && err.stack || err)); process.exit(1); });
`;

async function initDataDirectory(dir: string, options: PGliteOptions): Promise<void> {
  if (fs.existsSync(path.join(dir, 'PG_VERSION'))) return;
  const building = `${dir}.init`;
  fs.rmSync(building, { recursive: true, force: true });
  const args = JSON.stringify([require.resolve('@electric-sql/pglite'), building, options]);
  await new Promise<void>((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', INIT_SCRIPT, args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString('utf8')).slice(-4096)));
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`creating the embedded database in ${dir} failed (${signal ?? `exit code ${code}`}): ${stderr.trim()}`));
    });
  });
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(building, dir);
}

/**
 * Compiles WebAssembly with V8's optimizing compiler from the start instead of its baseline
 * compiler plus tier-up of hot functions while requests run. For the engine's 9 MB module the
 * tier-up compiles leave some 50 MB of freed-but-resident memory in the allocator's thread
 * arenas (RSS when ready 287-306 MB against 246-253 MB) and re-compile during requests; eager
 * optimizing compilation costs about 2 s of CPU at start, and queries run at full speed (the
 * baseline compiler alone would save as much memory but runs heavy queries some 30% slower).
 * The flag is process-wide and read when a module is compiled: set before the engine loads.
 */
function useOptimizingWasmCompiler(): void {
  v8.setFlagsFromString('--no-liftoff');
}

/**
 * knex's transaction statements (BEGIN, COMMIT, ROLLBACK, savepoints): sent in one simple-protocol
 * message (PGlite `exec`, one call into the engine) instead of `query`'s extended-protocol round
 * (parse, describe, bind, execute and sync, a call each). Every STOW-RS index change has two.
 */
const TRANSACTION_CONTROL = /^(BEGIN|COMMIT|ROLLBACK|SAVEPOINT \w+|RELEASE SAVEPOINT \w+|ROLLBACK TO SAVEPOINT \w+);?$/;

/**
 * The embedded engine as knex-pglite uses it (waitReady, query, close), opened once its data
 * directory exists.
 */
class EmbeddedEngine {
  readonly waitReady: Promise<void>;
  private db: PGlite | null = null;
  private statements: EmbeddedStatements | null = null;

  constructor(dir: string, options: PGliteOptions) {
    this.waitReady = initDataDirectory(dir, options).then(async () => {
      useOptimizingWasmCompiler();
      this.db = new PGlite(dir, options);
      await this.db.waitReady;
      this.statements = new EmbeddedStatements(this.db);
    });
    // knex reports a failed start on the first query; an unused engine must not crash the process.
    this.waitReady.catch(() => undefined);
  }

  /**
   * A statement with parameters runs as a named prepared statement (embedded-statements.ts);
   * knex passes a `name` option for the statements prepared on the PostgreSQL server too, which
   * the cache makes redundant. Transaction statements go in one message (TRANSACTION_CONTROL).
   * Anything else (no parameters, other options) goes to PGlite as is.
   */
  query<T>(sql: string, params?: unknown[], options?: Record<string, unknown>): Promise<Results<T>> {
    if (!this.db || !this.statements) return Promise.reject(new Error('the embedded database is not open'));
    const noOptions = !options || Object.keys(options).every((k) => k === 'name');
    if (params?.length && noOptions) return this.statements.query<T>(sql, params);
    if (!params?.length && noOptions && TRANSACTION_CONTROL.test(sql)) return this.db.exec(sql).then((results) => results[results.length - 1] as Results<T>);
    return this.db.query<T>(sql, params, options);
  }

  async close(): Promise<void> {
    await this.waitReady.catch(() => undefined);
    await this.db?.close();
  }
}

/**
 * The embedded engine is a single-process database: a second process opening the same files
 * would corrupt them. A pid lock file next to the data directory refuses that with a clear
 * message; a lock left by a process that no longer runs (kill -9) is taken over.
 */
function lockEmbeddedDirectory(dir: string): void {
  const lockPath = `${dir}.lock`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(lockPath, String(process.pid), { flag: 'wx' });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number(fs.readFileSync(lockPath, 'utf8').trim());
      if (holder === process.pid) return;
      if (Number.isInteger(holder) && holder > 0 && processIsAlive(holder)) {
        throw new Error(
          `the embedded database in ${dir} is in use by process ${holder}; stop it first, or use a PostgreSQL server (DATABASE_URL)`,
        );
      }
      fs.rmSync(lockPath, { force: true });
    }
  }
}

function unlockEmbeddedDirectory(dir: string): void {
  const lockPath = `${dir}.lock`;
  try {
    if (Number(fs.readFileSync(lockPath, 'utf8').trim()) === process.pid) fs.rmSync(lockPath, { force: true });
  } catch {
    // already gone
  }
}

/** Whether a process of this host with `pid` is running (signal 0; EPERM: running, not ours). */
export function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** True when a database error is transient (deadlock, serialization failure, dropped connection). */
export function isRetryableDbError(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  if (e?.code && RETRYABLE_CODES.has(e.code)) return true;
  if (e?.code === 'ECONNREFUSED' || e?.code === 'ECONNRESET' || e?.code === 'EPIPE') return true;
  return /Connection terminated|terminating connection|Client has encountered a connection error/i.test(e?.message ?? '');
}

/**
 * Runs `work` in a transaction, retrying a few times on transient database errors and on
 * unique violations (a concurrent writer inserted the same key first: the retry sees its row).
 */
export async function withTransaction<T>(knex: Knex, work: (trx: Knex.Transaction) => Promise<T>, attempts = 5): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await knex.transaction(work);
    } catch (err) {
      const uniqueViolation = (err as { code?: string })?.code === '23505';
      if (attempt >= attempts || !(uniqueViolation || isRetryableDbError(err))) throw err;
      await new Promise((r) => setTimeout(r, 20 * attempt + Math.random() * 30));
    }
  }
}
