import type { IncomingMessage, ServerResponse } from 'node:http';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { Logger } from './logger';

/**
 * Gives the JavaScript heap's garbage back to the operating system at two moments when a full
 * collection costs nothing that matters: when the server has gone idle after a burst, and just
 * before it reads a very large upload.
 *
 * Why: V8 lets the old generation grow to up to four times its live size before it collects
 * (the faster its collections, the more it lets it grow). After a burst of small STOW-RS
 * requests the embedded server held 140-190 MB of old space with 45 MB live, so its RSS ranged
 * 257-390 MB from run to run depending on when V8 last collected, against ~255 MB after a full
 * collection. V8's own memory reducer does the same collection, but only after 8 s of a
 * near-zero allocation rate, which a server that goes straight on to a large upload never has.
 * Capping the heap's growth instead (`--heap-growing-percent`, `--optimize-for-size`) kept RSS
 * down but cost 40-60% more CPU on every request; this costs one collection (tens of ms) per
 * burst, none on the hot path while the heap stays within `slackBytes` of its last live size.
 */
export interface MemoryReleaseOptions {
  /** Collect only when the heap has grown by this much since the last collection here; 0 = never. */
  slackBytes: number;
  /** No request in flight for this long counts as idle (default 1 s). */
  idleMs?: number;
  /** A request body of at least this many bytes, or of unknown length, counts as a large upload (default 64 MiB). */
  largeBodyBytes?: number;
  /**
   * At most one collection before a large upload per this many ms (default 30 s): a gateway that
   * streams every instance chunked (length unknown) must not pause the server before each one.
   */
  largeUploadSpacingMs?: number;
  logger?: Pick<Logger, 'debug' | 'warn'>;
  /** For tests: the collector and the heap size (default: V8's full collection and total heap size). */
  collect?: () => void;
  heapBytes?: () => number;
  now?: () => number;
}

/** The per-process memory release, hooked into the HTTP server's requests. */
export interface MemoryRelease {
  /** Call as each request arrives, before it is handled. */
  onRequest(req: IncomingMessage, res: ServerResponse): void;
  /** Checks for idleness now (the timer calls it every `idleMs / 2`). */
  checkIdle(): void;
  /** Collections made so far and their summed pause. */
  stats(): { collections: number; pauseMs: number };
  stop(): void;
}

const DEFAULT_IDLE_MS = 1_000;
const DEFAULT_LARGE_BODY_BYTES = 64 * 1024 * 1024;
const DEFAULT_LARGE_UPLOAD_SPACING_MS = 30_000;

/** Starts watching requests; returns a no-op release when `slackBytes` is 0 or no collector is available. */
export function startMemoryRelease(options: MemoryReleaseOptions): MemoryRelease {
  const collect = options.slackBytes > 0 ? (options.collect ?? exposeFullCollection(options.logger)) : undefined;
  if (!collect) return { onRequest: () => undefined, checkIdle: () => undefined, stats: () => ({ collections: 0, pauseMs: 0 }), stop: () => undefined };
  const heapBytes = options.heapBytes ?? (() => v8.getHeapStatistics().total_heap_size);
  const now = options.now ?? (() => performance.now());
  const idleMs = options.idleMs ?? DEFAULT_IDLE_MS;
  const largeBodyBytes = options.largeBodyBytes ?? DEFAULT_LARGE_BODY_BYTES;
  const largeUploadSpacingMs = options.largeUploadSpacingMs ?? DEFAULT_LARGE_UPLOAD_SPACING_MS;
  let lastLargeUploadRelease = -Infinity;
  let baseline = heapBytes();
  let inFlight = 0;
  let lastActivity = now();
  let collections = 0;
  let pauseMs = 0;

  /** Collects if the heap grew past the slack; true when it did. */
  const release = (reason: 'idle' | 'large upload'): boolean => {
    const before = heapBytes();
    if (before - baseline < options.slackBytes) return false;
    const t0 = now();
    collect();
    const pause = now() - t0;
    baseline = heapBytes();
    collections++;
    pauseMs += pause;
    options.logger?.debug({ reason, pauseMs: Math.round(pause), heapBeforeMb: mb(before), heapAfterMb: mb(baseline) }, 'heap released');
    return true;
  };
  const finished = () => {
    inFlight--;
    lastActivity = now();
  };
  const checkIdle = () => {
    if (inFlight === 0 && now() - lastActivity >= idleMs) release('idle');
  };
  const timer = setInterval(checkIdle, Math.max(100, idleMs / 2));
  timer.unref();

  return {
    onRequest(req, res) {
      inFlight++;
      lastActivity = now();
      res.once('close', finished);
      if (isLargeUpload(req, largeBodyBytes) && now() - lastLargeUploadRelease >= largeUploadSpacingMs && release('large upload')) {
        lastLargeUploadRelease = now();
      }
    },
    checkIdle,
    stats: () => ({ collections, pauseMs }),
    stop: () => clearInterval(timer),
  };
}

/** A body declared at least `largeBodyBytes` long, or sent chunked (its length is unknown until it ends). */
function isLargeUpload(req: IncomingMessage, largeBodyBytes: number): boolean {
  const length = req.headers['content-length'];
  if (length !== undefined) return Number(length) >= largeBodyBytes;
  return req.headers['transfer-encoding'] !== undefined;
}

/**
 * V8's full collection, made to compact every page, as a function. `gc` comes from the process's
 * --expose-gc if it was started with it, otherwise from a fresh context after enabling the flag at
 * run time (the flag only adds `gc` to contexts created after it is set; the main one stays as
 * it is). A plain full collection frees dead objects but moves only the most fragmented pages:
 * after a burst the old space kept 96 of its 133 MB committed with 45 MB live. Compacting every
 * page (`--compact-on-every-full-gc`, on only for this one call) brings it down to the live size.
 */
export function exposeFullCollection(logger?: Pick<Logger, 'warn'>): (() => void) | undefined {
  let gc = (globalThis as { gc?: unknown }).gc;
  try {
    if (typeof gc !== 'function') {
      v8.setFlagsFromString('--expose-gc');
      gc = vm.runInNewContext('gc') as unknown;
    }
  } catch (err) {
    logger?.warn({ err }, 'V8 full collection not available: memory is not released after bursts');
    return undefined;
  }
  if (typeof gc !== 'function') {
    logger?.warn('V8 full collection not available: memory is not released after bursts');
    return undefined;
  }
  const collect = gc as () => void;
  return () => {
    v8.setFlagsFromString('--compact-on-every-full-gc');
    try {
      collect();
    } finally {
      v8.setFlagsFromString('--no-compact-on-every-full-gc');
    }
  };
}

function mb(bytes: number): number {
  return Math.round(bytes / 1048576);
}
