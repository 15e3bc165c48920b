import fs from 'node:fs';
import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import ClientPgLite from 'knex-pglite';
import type { AppConfig } from '../config';
import type { Logger } from '../logger';

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
      connection: { connectionString: cfg.url, application_name: 'imaging-lake' },
      // Small idle timeout so a restarted PostgreSQL is reconnected quickly instead of handing out dead sockets.
      pool: { min: 0, max: cfg.poolMax, idleTimeoutMillis: 10_000, acquireTimeoutMillis: 30_000 },
      acquireConnectionTimeout: 30_000,
    });
  } else {
    fs.mkdirSync(path.dirname(cfg.dir), { recursive: true });
    lockEmbeddedDirectory(cfg.dir);
    knex = knexFactory({ client: ClientPgLite as unknown as typeof knexFactory.Client, dialect: 'postgres', connection: { filename: cfg.dir } } as Knex.Config);
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

function processIsAlive(pid: number): boolean {
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
