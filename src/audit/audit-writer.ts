/**
 * Group commit for the audit trail. Every request still waits for its AuditEvent to be durable
 * before it is answered, but requests that finish at about the same time share one multi-row
 * INSERT (one round trip, one WAL flush) instead of paying one each.
 *
 * Scheduling, with no timer that adds latency at low load:
 *   - an event queued while no INSERT is running is flushed at the end of the current turn of
 *     the event loop (setImmediate), together with whatever else that turn queued;
 *   - events queued while an INSERT runs wait for it and then go together in the next one;
 *   - a queue that reaches `maxBatch` is flushed at once, up to `maxInFlight` INSERTs at a time;
 *   - an event written with `{ now: true }` while no INSERT runs is sent at once, in the caller's
 *     turn (a read's event started at authorization: its commit then runs while the handler
 *     builds and sends its own query, instead of after it).
 * Each waiter is resolved when the INSERT holding its event has committed and rejected (with
 * AuditWriteError) when it failed, so the gate answers 503 instead of serving unaudited.
 */
import type { Knex } from 'knex';
import type { AuditEvent } from './audit-event';
import { AuditWriteError, auditConnectionPool, correctAuditEvent, insertAuditRows, insertAuditRowsOn, serializeAuditRow, type AuditRow } from './audit-store';
import { createConnectionLease } from './connection-lease';

/** Tuning of one writer. */
export interface AuditWriterOptions {
  /** Most events in one INSERT (default 256). */
  maxBatch?: number;
  /** Most INSERTs running at once; more than one only when the queue fills a batch (default 2). */
  maxInFlight?: number;
  /** How long a pooled connection stays with the writer after its last INSERT (default 1000 ms). */
  holdConnectionMs?: number;
}

/** Counters of one writer (for logs, benchmarks and tests). */
export interface AuditWriterStats {
  /** Events committed. */
  events: number;
  /** INSERT statements that committed. */
  batches: number;
  /** Events whose INSERT failed (their requests were refused). */
  failed: number;
  /** Largest batch committed. */
  largestBatch: number;
  /** Early-written read events corrected because the answer differed (correct()). */
  corrected: number;
}

/** A group-commit queue in front of `audit_events`. */
export interface AuditWriter {
  /**
   * Queues `event`; resolves once the INSERT holding it committed, rejects with AuditWriteError
   * otherwise. With `now`, an idle writer sends it at once instead of at the end of the turn.
   */
  write(event: AuditEvent, options?: { now?: boolean }): Promise<void>;
  /**
   * Rewrites an event this writer committed early with its final outcome and entities (same id):
   * its own transaction, not batched (the rare path: the read failed or touched more); one
   * statement on a held connection with the node-postgres driver.
   */
  correct(event: AuditEvent): Promise<void>;
  /** Resolves when every event queued so far has been committed or refused. */
  flush(): Promise<void>;
  /** Flushes what is queued, then refuses new events (call before the database closes). */
  close(): Promise<void>;
  stats(): AuditWriterStats;
}

interface Waiter {
  row: AuditRow;
  resolve: () => void;
  reject: (err: AuditWriteError) => void;
}

/** SQLSTATE classes 22 (data exception) and 23 (integrity constraint): the rows, not the database, are at fault. */
function isRowError(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' && (code.startsWith('22') || code.startsWith('23'));
}

/** Creates a group-commit writer over `knex` (the root knex: each batch commits on its own). */
export function createAuditWriter(knex: Knex, options: AuditWriterOptions = {}): AuditWriter {
  const maxBatch = Math.max(1, Math.trunc(options.maxBatch ?? 256));
  const maxInFlight = Math.max(1, Math.trunc(options.maxInFlight ?? 2));
  const queue: Waiter[] = [];
  const inFlight = new Set<Promise<void>>();
  const counters: AuditWriterStats = { events: 0, batches: 0, failed: 0, largestBatch: 0, corrected: 0 };
  // End of this event-loop turn: requests answered in the same turn share the INSERT.
  const drainAtEndOfTurn = endOfTurn(() => drain());
  let closed = false;
  // With the node-postgres driver the writer keeps its connections between INSERTs (connection-lease.ts).
  const pool = auditConnectionPool(knex);
  const lease = pool ? createConnectionLease(pool, options.holdConnectionMs) : undefined;
  const insert = (rows: AuditRow[]): Promise<void> => (lease ? lease.use((conn) => insertAuditRowsOn(conn, rows)) : insertAuditRows(knex, rows));
  // A knex destroyed without closeAuditWriter first would wait for the held connections forever.
  if (lease) (knex.client as { pool?: { on?(event: string, listener: () => void): void } }).pool?.on?.('poolDestroyRequest', () => void lease.close());

  /**
   * Writes `batch` and settles its waiters. A batch refused for the content of a row (a data or
   * constraint error) is split in halves and retried, so one bad row fails only its own request.
   */
  const commit = async (batch: Waiter[]): Promise<void> => {
    try {
      await insert(batch.map((w) => w.row));
    } catch (err) {
      if (batch.length > 1 && isRowError(err)) {
        const half = Math.ceil(batch.length / 2);
        await commit(batch.slice(0, half));
        await commit(batch.slice(half));
        return;
      }
      counters.failed += batch.length;
      const failure = new AuditWriteError(err);
      for (const w of batch) w.reject(failure);
      return;
    }
    counters.events += batch.length;
    counters.batches += 1;
    if (batch.length > counters.largestBatch) counters.largestBatch = batch.length;
    for (const w of batch) w.resolve();
  };

  const start = (batch: Waiter[]) => {
    const running: Promise<void> = commit(batch).finally(() => {
      inFlight.delete(running);
      drain();
    });
    inFlight.add(running);
  };

  /** Starts INSERTs: one when none runs, more only for full batches (or everything, once closing). */
  function drain(): void {
    while (queue.length > 0) {
      const full = queue.length >= maxBatch && inFlight.size < maxInFlight;
      if (inFlight.size > 0 && !full && !closed) return;
      start(queue.splice(0, maxBatch));
    }
  }

  const schedule = (now: boolean) => {
    if (now && inFlight.size === 0) {
      drain();
      return;
    }
    if (inFlight.size > 0) {
      // The running INSERT's completion drains the queue; only a full batch goes ahead of it.
      if (queue.length >= maxBatch) drain();
      return;
    }
    drainAtEndOfTurn();
  };

  const flush = async (): Promise<void> => {
    while (queue.length > 0 || inFlight.size > 0) {
      if (inFlight.size === 0) drain();
      await Promise.allSettled([...inFlight]);
    }
  };

  return {
    write(event, options) {
      if (closed) return Promise.reject(new AuditWriteError(new Error('the audit writer is closed (server shutting down)')));
      let row: AuditRow;
      try {
        row = serializeAuditRow(event);
      } catch (err) {
        return Promise.reject(new AuditWriteError(err));
      }
      return new Promise<void>((resolve, reject) => {
        queue.push({ row, resolve, reject });
        schedule(options?.now === true);
      });
    },
    async correct(event) {
      if (closed) throw new AuditWriteError(new Error('the audit writer is closed (server shutting down)'));
      try {
        await (lease ? lease.use((conn) => correctAuditEvent(knex, event, conn)) : correctAuditEvent(knex, event));
      } catch (err) {
        counters.failed += 1;
        throw err;
      }
      counters.corrected += 1;
    },
    flush,
    async close() {
      closed = true;
      await flush();
      await lease?.close();
    },
    stats: () => ({ ...counters }),
  };
}

/** Runs `run` once at the end of the current turn of the event loop, however often asked to within it. */
export function endOfTurn(run: () => void): () => void {
  let scheduled = false;
  return () => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      run();
    });
  };
}

/** One writer per database handle, created on first use (nothing happens at import). */
const writers = new WeakMap<Knex, AuditWriter>();

/** The group-commit writer of `knex`, created on first use. */
export function auditWriterFor(knex: Knex): AuditWriter {
  let writer = writers.get(knex);
  if (!writer) {
    writer = createAuditWriter(knex);
    writers.set(knex, writer);
  }
  return writer;
}

/**
 * Makes `writer` the one `auditWriterFor(knex)` returns (the durable outbox of audit-spool.ts, set
 * up at start). Refused once a writer of `knex` is in use: events queued on it would be orphaned.
 */
export function installAuditWriter(knex: Knex, writer: AuditWriter): void {
  if (writers.has(knex)) throw new Error('an audit writer is already in use for this database');
  writers.set(knex, writer);
}

/**
 * Flushes and closes the writer of `knex`, if one was created: call on shutdown before the
 * database closes, so every queued AuditEvent is committed and its request answered.
 */
export async function closeAuditWriter(knex: Knex): Promise<void> {
  // The closed writer stays registered: a late request is refused (503), never left unaudited.
  await writers.get(knex)?.close();
}
