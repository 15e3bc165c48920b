import { randomBytes } from 'node:crypto';
import { Client } from 'pg';

/** A throw-away PostgreSQL database for one benchmark run. */
export interface BenchDatabase {
  url: string;
  name: string;
  /** `select count(*) from instances`. */
  countInstances(): Promise<number>;
  serverVersion(): Promise<string>;
  /** Transactions committed and rolled back, and deadlocks, in this database so far (pg_stat_database). */
  transactionStats(): Promise<{ commits: number; rollbacks: number; deadlocks: number }>;
  /** Process ids of the server backends connected to this database (the server's own connections). */
  backendPids(): Promise<number[]>;
  drop(): Promise<void>;
}

/** Creates a database with a random name on the server at `adminUrl`; drop() removes it. */
export async function createBenchDatabase(adminUrl: string): Promise<BenchDatabase> {
  const name = `il_bench_${randomBytes(6).toString('hex')}`;
  await withClient(adminUrl, (c) => c.query(`CREATE DATABASE ${name}`));
  return openBenchDatabase(adminUrl, name);
}

/** A handle on a benchmark database that already exists (one a run kept); drop() removes it. */
export function openBenchDatabase(adminUrl: string, name: string): BenchDatabase {
  // A run's own random name, or an engineer's copy of a kept index (`il_<letter>_...`, the letter with an optional digit as in `il_q2_...`, e.g. made with createdb -T).
  if (!/^il_(bench_[0-9a-f]+|[a-z][0-9]?_[a-z0-9_]+)$/.test(name)) throw new Error(`${name} is not a benchmark database name`);
  const url = databaseUrl(adminUrl, name);
  return {
    url,
    name,
    async countInstances() {
      return withClient(url, async (c) => Number((await c.query<{ n: string }>('select count(*) as n from instances')).rows[0]?.n ?? 0));
    },
    async serverVersion() {
      return withClient(url, async (c) => String((await c.query<{ v: string }>("select current_setting('server_version') as v")).rows[0]?.v ?? '?'));
    },
    async transactionStats() {
      return withClient(url, async (c) => {
        // Statistics are sent to the collector asynchronously; ask for a fresh snapshot.
        await c.query('select pg_stat_clear_snapshot()');
        const r = (
          await c.query<{ commits: string; rollbacks: string; deadlocks: string }>(
            'select xact_commit as commits, xact_rollback as rollbacks, deadlocks from pg_stat_database where datname = current_database()',
          )
        ).rows[0];
        return { commits: Number(r?.commits ?? 0), rollbacks: Number(r?.rollbacks ?? 0), deadlocks: Number(r?.deadlocks ?? 0) };
      });
    },
    async backendPids() {
      return withClient(url, async (c) =>
        (
          await c.query<{ pid: number }>('select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()')
        ).rows.map((r) => Number(r.pid)),
      );
    },
    async drop() {
      await withClient(adminUrl, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}

function databaseUrl(adminUrl: string, name: string): string {
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  return u.toString();
}

async function withClient<T>(url: string, work: (c: Client) => Promise<T>): Promise<T> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    return await work(c);
  } finally {
    await c.end();
  }
}
