import { Client } from 'pg';
import { ADMIN_DATABASE_URL, releasedDatabasePrefix } from './test-env';

/**
 * Drops the databases a run has released, in the background of the jest parent process.
 * DROP DATABASE forces an immediate checkpoint of the whole PostgreSQL server (PostgreSQL 15
 * dropdb), seconds on a busy machine: test files rename their database out of the way instead
 * (instant) and go on while this drops it. `stop()` drops what is left and waits for it.
 */
export interface DatabaseDropper {
  stop(): Promise<void>;
}

/** Starts dropping this run's released databases every `intervalMs`. */
export function startDatabaseDropper(runId: string, intervalMs = 1000): DatabaseDropper {
  const prefix = releasedDatabasePrefix(runId);
  let stopped = false;
  let wake: (() => void) | null = null;
  const dropReleased = async (): Promise<void> => {
    const admin = new Client({ connectionString: ADMIN_DATABASE_URL });
    await admin.connect();
    try {
      const { rows } = await admin.query<{ datname: string }>('SELECT datname FROM pg_database WHERE left(datname, $1) = $2', [prefix.length, prefix]);
      for (const { datname } of rows) await admin.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`);
    } finally {
      await admin.end();
    }
  };
  const loop = (async () => {
    while (!stopped) {
      // A failed pass (server restarting under a reliability test) is retried on the next one.
      await dropReleased().catch(() => undefined);
      if (!stopped) await new Promise<void>((resolve) => ((wake = resolve), setTimeout(resolve, intervalMs).unref()));
    }
  })();
  return {
    async stop() {
      stopped = true;
      wake?.();
      await loop;
      await dropReleased();
    },
  };
}
