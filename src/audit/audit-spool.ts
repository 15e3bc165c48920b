/**
 * A durable outbox for the audit trail (DESIGN.md: "every access writes an AuditEvent in the same
 * transaction or a durable outbox"). A request's AuditEvent is durable once it is appended to a
 * local segment file opened with O_DSYNC (one write system call that returns after the data is
 * on disk); the request may then be answered. A shipper moves the events into `audit_events` in
 * batches, shortly afterwards, and deletes each segment once everything in it has shipped.
 *
 * Why: an AuditEvent committed to PostgreSQL before each answer costs a round trip, a WAL flush
 * and the backend's work on every read; the append costs one system call, and requests that
 * finish together share it (group commit, as audit-writer.ts does for INSERTs). Shipping batches
 * of hundreds of events costs PostgreSQL a fraction of a one-row commit per event. Measured
 * (bench/audit-writer.ts): at one writer less time to durable and about a third of the
 * PostgreSQL CPU per event; at 16 writers, where group commit already shares each INSERT, no
 * gain (more CPU in this process, events/s the same or lower). Hence opt-in (AUDIT_SPOOL_DIR).
 *
 * What it guarantees:
 *   - no request is answered before its event is on disk; a failed append refuses the request
 *     (AuditWriteError, answered 503 by the gate), as a failed INSERT does;
 *   - every event on disk reaches `audit_events`, exactly once: shipping is idempotent (the
 *     primary key (id, recorded) skips rows shipped before a crash), and a process that starts
 *     ships the segments of any process that died (its own earlier run included);
 *   - a correction of a read's early event (audit-response.ts) is appended like an event; if the
 *     event has not shipped yet it ships corrected, otherwise the correction is applied with the
 *     trail's own correction rule, once.
 *   - reads of the trail in this process see every event written before them (`flush()`, which
 *     the AuditEvent endpoint calls first).
 *
 * Layout: `<dir>/<host>~<pid>~<random>/` per running process, holding `owner` (touched every few
 * seconds while the process lives) and segments `00000001.jsonl`, ... (one event per line). A
 * directory whose owner is gone (same host and its process not running, or `owner` not touched
 * for `staleAfterMs`) is renamed into the claiming process's name and shipped. The directory
 * must be on a persistent local disk of the host (as the filesystem blob store is).
 */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { appendFile, mkdir, open, readdir, readFile, rename, rm, stat, unlink, utimes, writeFile, type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Knex } from 'knex';
import type { AuditEvent } from './audit-event';
import { AuditWriteError, applyAuditCorrectionOnce, insertAuditRowsOnce, serializeAuditRow, type AuditRow } from './audit-store';
import { endOfTurn, type AuditWriter, type AuditWriterStats } from './audit-writer';
import { processIsAlive } from '../db/database';

/** Tuning of one spool. */
export interface AuditSpoolOptions {
  /** The spool's directory (created if missing). */
  dir: string;
  logger: { info(o: object, m: string): void; warn(o: object, m: string): void; error(o: object, m: string): void };
  /** How long a durable event waits before shipping, so that events ship in batches (default 50 ms). */
  shipDelayMs?: number;
  /** Most events in one shipping INSERT (default 500). */
  shipBatch?: number;
  /** A segment is closed and a new one started past this size (default 16 MiB). */
  segmentBytes?: number;
  /** Events durable but not yet shipped past which new events are refused (default 50,000). */
  maxUnshipped?: number;
  /** A directory whose owner file is older than this belongs to no running process (default 60 s). */
  staleAfterMs?: number;
  /** How often the owner file is touched and other directories are looked at (default 5 s). */
  heartbeatMs?: number;
}

/** Counters of a spool: the writer's, plus shipping. */
export interface AuditSpoolStats extends AuditWriterStats {
  /** Events (and corrections) shipped into `audit_events`. */
  shipped: number;
  /** Shipping INSERTs that succeeded. */
  shipBatches: number;
  /** Events durable in the spool, not yet shipped. */
  unshipped: number;
  /** Events shipped from the directories of processes that had stopped. */
  recovered: number;
  /** Events (or corrections) the database refused, kept in `rejected.jsonl` of the spool directory. */
  rejected: number;
}

/** The spool as the gate uses it: an AuditWriter whose `flush()` also ships. */
export interface AuditSpool extends AuditWriter {
  stats(): AuditSpoolStats;
  /** The directory of this process's segments. */
  readonly directory: string;
}

type Kind = 'w' | 'c';

interface Waiter {
  kind: Kind;
  row: AuditRow;
  line: Buffer;
  resolve: () => void;
  reject: (err: AuditWriteError) => void;
}

/** An event (or correction) durable in the spool, waiting to ship. */
interface Entry {
  row: AuditRow;
  /** The segments holding its lines (the event's, then its correction's). */
  segments: number[];
  /** Ships as a correction (UPDATE) instead of an INSERT: the event itself shipped before. */
  correction: boolean;
  /** Whether the INSERT must be followed by the correction rule (recovery: the uncorrected row may be in the trail already). */
  corrected: boolean;
}

const SEGMENT_NAME = /^(\d{8})\.jsonl$/;
/** A process's directory (`<host>~<pid>~<random>`), or one claimed by another process (`...claimed-<n>`). */
const DIRECTORY_NAME = /^[A-Za-z0-9._-]+~\d+~[0-9a-f]{12}(\.claimed-\d+)?$/;
const OWNER_FILE = 'owner';
const REJECTED_FILE = 'rejected.jsonl';
/** Instance ids of the spools open in this process (a directory of this pid not among them is dead). */
const liveInProcess = new Set<string>();

/** One line of a segment: kind, index columns, and the resource JSON spliced in as it is. */
function lineOf(kind: Kind, row: AuditRow): Buffer {
  return Buffer.from(`{"k":"${kind}","c":${JSON.stringify(row.columns)},"r":${row.resource}}\n`);
}

/** Parses one line back (undefined when it is not a whole line of ours: a write cut by a crash). */
function parseLine(text: string): { kind: Kind; row: AuditRow } | undefined {
  try {
    const value = JSON.parse(text) as { k?: unknown; c?: unknown; r?: unknown };
    if ((value.k !== 'w' && value.k !== 'c') || !Array.isArray(value.c) || typeof value.r !== 'object' || value.r === null) return undefined;
    return { kind: value.k, row: { columns: value.c as AuditRow['columns'], resource: JSON.stringify(value.r) } };
  } catch {
    return undefined;
  }
}

/** SQLSTATE classes 22, 23 and the trail's own refusal (42501): the row, not the database, is at fault. */
function isRowError(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' && (code.startsWith('22') || code.startsWith('23') || code === '42501');
}

/** Appends `buf` whole at the end of `fh` (a short write is continued, as write(2) allows). */
async function appendAll(fh: FileHandle, buf: Buffer): Promise<void> {
  let offset = 0;
  while (offset < buf.length) {
    const { bytesWritten } = await fh.write(buf, offset, buf.length - offset);
    if (bytesWritten <= 0) throw new Error('the audit spool accepted no bytes');
    offset += bytesWritten;
  }
}

/**
 * Opens the spool in `options.dir`: creates this process's directory, ships what processes that
 * have stopped left behind (before it resolves), and starts the heartbeat. Rejects if the
 * directory cannot be created or written.
 */
export async function openAuditSpool(knex: Knex, options: AuditSpoolOptions): Promise<AuditSpool> {
  const { logger } = options;
  const shipDelayMs = options.shipDelayMs ?? 50;
  const shipBatch = Math.max(1, Math.trunc(options.shipBatch ?? 500));
  const segmentBytes = options.segmentBytes ?? 16 * 1024 * 1024;
  const maxUnshipped = options.maxUnshipped ?? 50_000;
  const staleAfterMs = options.staleAfterMs ?? 60_000;
  const heartbeatMs = options.heartbeatMs ?? 5_000;
  const root = path.resolve(options.dir);
  const host = os.hostname().replace(/[^A-Za-z0-9._-]/g, '_');
  const instance = `${host}~${process.pid}~${randomBytes(6).toString('hex')}`;
  const directory = path.join(root, instance);
  await mkdir(directory, { recursive: true });
  await writeFile(path.join(directory, OWNER_FILE), `${JSON.stringify({ host, pid: process.pid, started: new Date().toISOString() })}\n`);
  liveInProcess.add(instance);

  const counters: Omit<AuditSpoolStats, 'unshipped'> = { events: 0, batches: 0, failed: 0, largestBatch: 0, corrected: 0, shipped: 0, shipBatches: 0, recovered: 0, rejected: 0 };
  const queue: Waiter[] = [];
  let appending: Promise<void> | undefined;
  let closed = false;
  let segment: { seq: number; fh: FileHandle; bytes: number } | undefined;
  let nextSeq = 1;
  /** Lines not yet shipped, per segment; a segment at zero (and not the open one) is deleted. */
  const linesLeft = new Map<number, number>();
  /** Durable events waiting to ship, by id, in the order they were written. */
  const waiting = new Map<string, Entry>();
  /** Corrections of events that have shipped (or are shipping), in order. */
  const corrections: Entry[] = [];
  /** The batch being shipped (kept until it has shipped, retried first after a failure). */
  let shipping: Entry[] | undefined;
  let shipTimer: NodeJS.Timeout | undefined;
  let shipChain: Promise<void> = Promise.resolve();
  let retryMs = 0;
  const unshipped = (): number => waiting.size + corrections.length + (shipping?.length ?? 0);

  const rejectedFile = path.join(root, REJECTED_FILE);
  /** Keeps what the database refused beside the spool for an operator, and says so in the log. */
  const park = async (entries: Entry[], err: unknown): Promise<void> => {
    counters.rejected += entries.length;
    logger.error({ err, ids: entries.map((e) => e.row.columns[0]), file: rejectedFile }, 'audit spool: the database refused AuditEvents; kept in the rejected file');
    await appendFile(rejectedFile, entries.map((e) => lineOf(e.correction ? 'c' : 'w', e.row).toString()).join(''));
  };

  // ---- appending -------------------------------------------------------------------------

  const openSegment = async (): Promise<void> => {
    const seq = nextSeq++;
    const fh = await open(path.join(directory, `${String(seq).padStart(8, '0')}.jsonl`), fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_APPEND | fsConstants.O_DSYNC, 0o600);
    const previous = segment;
    segment = { seq, fh, bytes: 0 };
    if (previous) {
      await previous.fh.close().catch(() => undefined);
      if ((linesLeft.get(previous.seq) ?? 0) === 0) await dropSegment(previous.seq);
    }
  };

  const dropSegment = async (seq: number): Promise<void> => {
    linesLeft.delete(seq);
    await unlink(path.join(directory, `${String(seq).padStart(8, '0')}.jsonl`)).catch(() => undefined);
  };

  /** Records a durable line for shipping. */
  const enlist = (w: Waiter, seq: number): void => {
    linesLeft.set(seq, (linesLeft.get(seq) ?? 0) + 1);
    const id = w.row.columns[0] as string;
    if (w.kind === 'w') {
      waiting.set(id, { row: w.row, segments: [seq], correction: false, corrected: false });
      return;
    }
    const entry = waiting.get(id);
    if (entry) {
      // Not shipped yet: it ships corrected; its correction's line is freed with it.
      entry.row = w.row;
      entry.segments.push(seq);
    } else {
      corrections.push({ row: w.row, segments: [seq], correction: true, corrected: false });
    }
  };

  const appendBatch = async (batch: Waiter[]): Promise<void> => {
    try {
      if (!segment || segment.bytes >= segmentBytes) await openSegment();
      const buf = batch.length === 1 ? batch[0].line : Buffer.concat(batch.map((w) => w.line));
      const current = segment!;
      try {
        await appendAll(current.fh, buf);
      } catch (err) {
        // Part of the batch may be in the file: nothing more goes after it (the next batch opens a new segment).
        if (segment === current) segment = undefined;
        await current.fh.close().catch(() => undefined);
        if ((linesLeft.get(current.seq) ?? 0) === 0) await dropSegment(current.seq);
        throw err;
      }
      current.bytes += buf.length;
      for (const w of batch) enlist(w, current.seq);
    } catch (err) {
      counters.failed += batch.length;
      const failure = new AuditWriteError(err);
      for (const w of batch) w.reject(failure);
      return;
    }
    counters.batches += 1;
    if (batch.length > counters.largestBatch) counters.largestBatch = batch.length;
    for (const w of batch) {
      if (w.kind === 'w') counters.events += 1;
      else counters.corrected += 1;
      w.resolve();
    }
    scheduleShip();
  };

  /** Appends everything queued, one write per batch, one batch at a time. */
  const drain = (): void => {
    if (appending || queue.length === 0) return;
    const batch = queue.splice(0, queue.length);
    appending = appendBatch(batch).finally(() => {
      appending = undefined;
      drain();
    });
  };

  const enqueue = (kind: Kind, event: AuditEvent, now: boolean): Promise<void> => {
    if (closed) return Promise.reject(new AuditWriteError(new Error('the audit spool is closed (server shutting down)')));
    if (unshipped() >= maxUnshipped) {
      return Promise.reject(new AuditWriteError(new Error(`${unshipped()} AuditEvents wait to be shipped to the database: refusing more until it takes them`)));
    }
    let row: AuditRow;
    try {
      row = serializeAuditRow(event);
    } catch (err) {
      return Promise.reject(new AuditWriteError(err));
    }
    return new Promise<void>((resolve, reject) => {
      queue.push({ kind, row, line: lineOf(kind, row), resolve, reject });
      if (appending) return;
      if (now) drain();
      else drainAtEndOfTurn();
    });
  };

  // End of this turn of the event loop: the requests answered in it share one write.
  const drainAtEndOfTurn = endOfTurn(() => drain());

  const appendsSettled = async (): Promise<void> => {
    while (appending || queue.length > 0) {
      drain();
      await appending;
    }
  };

  // ---- shipping --------------------------------------------------------------------------

  /** Frees the lines of shipped entries and deletes the segments left with none. */
  const release = async (entries: Entry[]): Promise<void> => {
    for (const entry of entries) {
      counters.shipped += 1;
      for (const seq of entry.segments) {
        const left = (linesLeft.get(seq) ?? 1) - 1;
        linesLeft.set(seq, left);
        if (left === 0 && seq !== segment?.seq) await dropSegment(seq);
      }
    }
  };

  /** INSERTs `entries` (skipping rows already in the trail); rows the database refuses are parked, halving to find them. */
  const insertOnce = async (entries: Entry[]): Promise<void> => {
    try {
      await insertAuditRowsOnce(knex, entries.map((e) => e.row));
    } catch (err) {
      if (!isRowError(err)) throw err;
      if (entries.length === 1) {
        await park(entries, err);
        return;
      }
      const half = Math.ceil(entries.length / 2);
      await insertOnce(entries.slice(0, half));
      await insertOnce(entries.slice(half));
      return;
    }
    counters.shipBatches += 1;
  };

  const correctOnce = async (entry: Entry): Promise<void> => {
    try {
      await applyAuditCorrectionOnce(knex, entry.row);
    } catch (err) {
      if (!isRowError(err)) throw err;
      await park([entry], err);
    }
  };

  /**
   * Ships what was durable when the round began: events in order, then corrections of events
   * shipped earlier. Events made durable meanwhile wait for the next round (their own timer), so
   * a steady stream ships in batches instead of one INSERT chasing each event.
   */
  const shipRound = async (): Promise<void> => {
    let events = (shipping?.length ?? 0) + waiting.size;
    const fixes = corrections.length;
    while (events > 0) {
      if (!shipping) {
        shipping = [];
        for (const [id, entry] of waiting) {
          shipping.push(entry);
          waiting.delete(id);
          if (shipping.length >= Math.min(shipBatch, events)) break;
        }
      }
      await insertOnce(shipping);
      const done = shipping;
      shipping = undefined;
      events -= done.length;
      await release(done);
    }
    for (let i = 0; i < fixes && corrections.length > 0; i++) {
      await correctOnce(corrections[0]);
      await release(corrections.splice(0, 1));
    }
  };

  /** One shipping round after those already chained; on failure, retried later with backoff. */
  const ship = (): Promise<void> => {
    const round = shipChain.then(shipRound);
    shipChain = round.then(
      () => {
        retryMs = 0;
      },
      (err) => {
        retryMs = Math.min(Math.max(retryMs * 2, 1000), 30_000);
        logger.warn({ err, unshipped: unshipped(), retryInMs: retryMs }, 'audit spool: shipping to the database failed; retrying');
        armShipTimer(retryMs);
      },
    );
    return round;
  };

  const armShipTimer = (delay: number): void => {
    if (shipTimer || closed) return;
    shipTimer = setTimeout(() => {
      shipTimer = undefined;
      ship().catch(() => undefined);
    }, delay);
    shipTimer.unref();
  };

  function scheduleShip(): void {
    armShipTimer(retryMs > 0 ? retryMs : shipDelayMs);
  }

  /** Appends settled, then one shipping round now (rejects if it failed). */
  const flush = async (): Promise<void> => {
    await appendsSettled();
    if (shipTimer) {
      clearTimeout(shipTimer);
      shipTimer = undefined;
    }
    await ship();
  };

  // ---- directories of processes that stopped ---------------------------------------------

  /** Whether the directory `name` belongs to no running process. */
  const ownerGone = async (name: string): Promise<boolean> => {
    const [ownerHost, ownerPid] = name.split('~');
    const pid = Number(ownerPid);
    if (ownerHost === host && Number.isInteger(pid) && pid > 0) {
      if (pid === process.pid) return !liveInProcess.has(name);
      if (!processIsAlive(pid)) return true;
    }
    const touched = await stat(path.join(root, name, OWNER_FILE)).catch(() => stat(path.join(root, name)).catch(() => undefined));
    return touched !== undefined && Date.now() - touched.mtimeMs > staleAfterMs;
  };

  /** Ships one claimed directory's segments (in order), then removes it. */
  const recoverDirectory = async (dir: string): Promise<void> => {
    const names = (await readdir(dir)).filter((n) => SEGMENT_NAME.test(n)).sort();
    const events = new Map<string, Entry>();
    const late: Entry[] = [];
    for (const [i, name] of names.entries()) {
      const lines = (await readFile(path.join(dir, name), 'utf8')).split('\n');
      for (const [j, text] of lines.entries()) {
        if (text === '') continue;
        const parsed = parseLine(text);
        if (!parsed) {
          // The last line of the last segment may be a write a crash cut short (never acknowledged).
          if (!(i === names.length - 1 && j >= lines.length - 2)) logger.warn({ segment: path.join(dir, name), line: j + 1 }, 'audit spool: unreadable line skipped');
          continue;
        }
        const id = parsed.row.columns[0] as string;
        const entry = events.get(id);
        if (parsed.kind === 'w') events.set(id, { row: parsed.row, segments: [], correction: false, corrected: false });
        else if (entry) Object.assign(entry, { row: parsed.row, corrected: true });
        else late.push({ row: parsed.row, segments: [], correction: true, corrected: false });
      }
    }
    const all = [...events.values()];
    for (let i = 0; i < all.length; i += shipBatch) await insertOnce(all.slice(i, i + shipBatch));
    // Those corrected in the files: the uncorrected event may have shipped before the crash.
    for (const entry of [...all.filter((e) => e.corrected), ...late]) await correctOnce({ ...entry, correction: true });
    counters.recovered += all.length + late.length;
    await rm(dir, { recursive: true, force: true });
    if (all.length + late.length > 0) logger.info({ directory: dir, events: all.length, corrections: late.length }, 'audit spool: shipped the AuditEvents of a process that had stopped');
  };

  let claims = 0;
  /** Claims and ships the directories of processes that stopped. */
  const recoverStopped = async (): Promise<void> => {
    const names = await readdir(root, { withFileTypes: true }).catch(() => []);
    for (const d of names) {
      if (!d.isDirectory() || !DIRECTORY_NAME.test(d.name) || d.name === instance || d.name.startsWith(`${instance}.`)) continue;
      if (!(await ownerGone(d.name))) continue;
      const claimed = path.join(root, `${instance}.claimed-${++claims}`);
      try {
        await rename(path.join(root, d.name), claimed);
      } catch {
        continue; // another process claimed it first
      }
      // Claimed: touched, so that no other host takes it as stale while this process ships it.
      await writeFile(path.join(claimed, OWNER_FILE), `${JSON.stringify({ host, pid: process.pid, claimed: new Date().toISOString() })}\n`).catch(() => undefined);
      await recoverDirectory(claimed);
    }
    // Claimed by this process in an earlier attempt that failed: retried.
    for (const d of await readdir(root, { withFileTypes: true }).catch(() => [])) {
      if (d.isDirectory() && d.name.startsWith(`${instance}.claimed-`)) await recoverDirectory(path.join(root, d.name));
    }
  };

  let recovering: Promise<void> | undefined;
  const recoverInBackground = (): void => {
    if (recovering || closed) return;
    recovering = recoverStopped()
      .catch((err) => logger.warn({ err }, 'audit spool: the segments of a stopped process could not be shipped yet; retrying'))
      .finally(() => (recovering = undefined));
  };

  try {
    await recoverStopped();
  } catch (err) {
    logger.warn({ err }, 'audit spool: the segments of a stopped process could not be shipped yet; retrying');
  }
  const ownerPath = path.join(directory, OWNER_FILE);
  const heartbeat = setInterval(() => {
    const now = new Date();
    utimes(ownerPath, now, now).catch((err) => logger.warn({ err }, 'audit spool: owner file not touched'));
    recoverInBackground();
  }, heartbeatMs);
  heartbeat.unref();

  return {
    directory,
    write: (event, writeOptions) => enqueue('w', event, writeOptions?.now === true),
    correct: (event) => enqueue('c', event, true),
    flush,
    async close() {
      if (closed) return;
      closed = true;
      await appendsSettled();
      clearInterval(heartbeat);
      if (shipTimer) clearTimeout(shipTimer);
      shipTimer = undefined;
      await recovering;
      try {
        await ship();
      } catch {
        // Left on disk: the next process to start ships it.
      }
      await segment?.fh.close().catch(() => undefined);
      segment = undefined;
      liveInProcess.delete(instance);
      if (waiting.size === 0 && corrections.length === 0 && !shipping) await rm(directory, { recursive: true, force: true });
      else logger.warn({ directory, unshipped: unshipped() }, 'audit spool: closed with AuditEvents not yet in the database; the next start ships them');
    },
    stats: () => ({ ...counters, unshipped: unshipped() }),
  };
}
