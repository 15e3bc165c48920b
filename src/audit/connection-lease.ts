/**
 * Pooled connections the audit writer keeps between its INSERTs. Every access writes an
 * AuditEvent, so taking a connection from knex's pool and handing it back for each INSERT (an
 * asynchronous validation, a pending-acquire timer and its events each time) cost about as much
 * Node.js CPU as the INSERT's own round trip (measured: ~70 µs of ~190 µs per statement).
 * A connection stays with the writer while the traffic continues and goes back to the pool once
 * it has been idle for `idleMs`, or at once when its statement failed (knex then drops it if the
 * connection itself broke) or the writer closes.
 */
import type { AuditConnection, AuditConnectionPool } from './audit-store';

/** Connections held across statements. */
export interface ConnectionLease {
  /** Runs `work` on a held connection, taking one from the pool when none is idle. */
  use<T>(work: (conn: AuditConnection) => Promise<T>): Promise<T>;
  /** How many connections are held and idle (for tests). */
  idleCount(): number;
  /** Hands every idle connection back to the pool and holds none from now on. */
  close(): Promise<void>;
}

interface Held {
  conn: AuditConnection;
  /** Date.now() when it was last handed back. */
  since: number;
}

/** Creates a lease over `pool`; idle connections go back after `idleMs` (default 1 s). */
export function createConnectionLease(pool: AuditConnectionPool, idleMs = 1_000): ConnectionLease {
  const idle: Held[] = [];
  let timer: NodeJS.Timeout | undefined;
  let closed = false;

  const release = (conn: AuditConnection) => Promise.resolve(pool.releaseConnection(conn)).catch(() => undefined);

  /** Returns the connections idle for `idleMs` or more (the oldest are first), then waits again for the rest. */
  const sweep = () => {
    timer = undefined;
    const cutoff = Date.now() - idleMs;
    while (idle.length > 0 && idle[0].since <= cutoff) void release(idle.shift()!.conn);
    arm();
  };
  const arm = () => {
    if (timer || idle.length === 0) return;
    timer = setTimeout(sweep, Math.max(1, idle[0].since + idleMs - Date.now()));
    // An idle connection never keeps the process alive.
    timer.unref();
  };

  return {
    async use<T>(work: (conn: AuditConnection) => Promise<T>): Promise<T> {
      let held = idle.pop();
      // knex marks a connection whose socket failed or ended: hand it back (the pool drops it).
      while (held && held.conn.__knex__disposed) {
        void release(held.conn);
        held = idle.pop();
      }
      const conn = held ? held.conn : await pool.acquireConnection();
      let result: T;
      try {
        result = await work(conn);
      } catch (err) {
        await release(conn);
        throw err;
      }
      if (closed) await release(conn);
      else {
        idle.push({ conn, since: Date.now() });
        arm();
      }
      return result;
    },
    idleCount: () => idle.length,
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
      await Promise.all(idle.splice(0).map((h) => release(h.conn)));
    },
  };
}
