import type { BlobStore } from '../storage/blob-store';
import { ReadBufferPool } from '../storage/read-buffer-pool';

/**
 * Small instances of a multi-instance WADO-RS answer, packed: consecutive parts are laid out
 * framed (delimiter, headers, blank line, body, CRLF: the bytes MultipartWriter.writePart
 * writes) in one reused buffer, their blobs read straight into their places, and the run of
 * parts leaves in one socket write.
 *
 * Why: a study of thin slices (100 CT instances of 34 kB) was 100 fresh buffers outside the
 * JavaScript heap (memory V8 counts towards starting full collections) and three writes per
 * part, each a pass through the HTTP response and the socket's queue. With the instance list as
 * one prepared statement (wado-index.ts), the server's CPU per MB of that retrieve went from
 * 9.3 to 3.5 ms on the embedded engine and from 5.7 to 3.7 ms with PostgreSQL
 * (bench/study-retrieve.ts, 4 interleaved pairs of 20 retrieves, 2-core machine).
 */

/** One part whose bytes fit in memory: its head text (latin1), File Meta Information generated for it, and its blob. */
export interface PackablePart {
  head: string;
  prefix: Buffer | null;
  blobKey: string;
  /** Blob bytes according to the index. */
  size: number;
}

/** Consecutive packable parts that fit in one slab together. */
export interface PartRun<P extends PackablePart = PackablePart> {
  parts: P[];
  /** Their framed bytes. */
  bytes: number;
}

/** A run read into its slab, once every read has settled. */
export interface FilledRun {
  slab: Buffer;
  /** Framed bytes of the parts before the first failure (all of them when none failed), from the slab's start. */
  complete: number;
  /** The first part whose read failed or came back short: its index in the run, and the error or the bytes it has. */
  failed?: { index: number; error?: unknown; got?: number; headStart: number; bodyStart: number };
}

/**
 * Bytes per slab: the largest part packed (an instance of 1 MiB, its File Meta Information and
 * head) fits, and a run is at most this much, so the next run is read while one is written.
 */
export const SLAB_BYTES = 1024 * 1024 + 64 * 1024;
/** Parts per run at most. */
export const RUN_PARTS = 64;
/**
 * Reads of one run in flight at once: the filesystem store's reads queue for libuv's four pool
 * threads anyway, and on S3 each is a GET, whose client keeps 50 sockets for the whole process
 * (with two runs read ahead, 64 per run would be some 190 GETs for one answer).
 */
export const RUN_READS_IN_FLIGHT = 16;

/** Slabs given back once their socket write has completed; four stay allocated between answers (a 3.4 MB study uses four). */
export const slabPool = new ReadBufferPool(SLAB_BYTES, 4);

/** Framed bytes of a part: head, prefix, body, CRLF. */
export function framedLength(p: PackablePart): number {
  return p.head.length + (p.prefix?.length ?? 0) + p.size + 2;
}

/** Splits parts into runs of at most SLAB_BYTES and RUN_PARTS each; parts must each fit in a slab. */
export function groupRuns<P extends PackablePart>(parts: P[]): Array<PartRun<P>> {
  const runs: Array<PartRun<P>> = [];
  let run: PartRun<P> | null = null;
  for (const p of parts) {
    const n = framedLength(p);
    if (n > SLAB_BYTES) throw new RangeError(`a part of ${n} bytes does not fit in a slab`);
    if (!run || run.bytes + n > SLAB_BYTES || run.parts.length >= RUN_PARTS) {
      run = { parts: [], bytes: 0 };
      runs.push(run);
    }
    run.parts.push(p);
    run.bytes += n;
  }
  return runs;
}

/**
 * Lays a run out in a slab of `pool` and reads every blob into its place, RUN_READS_IN_FLIGHT at a time. Settles
 * only when every read has (a read still filling the slab must not outlive it). The caller
 * writes `slab[0, complete)` and gives the slab back (pool.release) once that write completed;
 * a slab never given back is collected.
 */
export async function fillRun(blobs: BlobStore, run: PartRun, pool: ReadBufferPool = slabPool): Promise<FilledRun> {
  const slab = pool.take();
  const heads: number[] = [];
  const bodies: number[] = [];
  const ends: number[] = [];
  let at = 0;
  for (const p of run.parts) {
    heads.push(at);
    at += slab.write(p.head, at, 'latin1');
    if (p.prefix) at += p.prefix.copy(slab, at);
    bodies.push(at);
    at += p.size;
    slab[at++] = 0x0d;
    slab[at++] = 0x0a;
    ends.push(at);
  }
  const results: Array<PromiseSettledResult<number>> = new Array(run.parts.length);
  let next = 0;
  const reader = async () => {
    for (let k = next++; k < run.parts.length; k = next++) {
      const p = run.parts[k];
      try {
        results[k] = { status: 'fulfilled', value: p.size === 0 ? 0 : await readInto(blobs, p, slab, bodies[k]) };
      } catch (reason) {
        results[k] = { status: 'rejected', reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(RUN_READS_IN_FLIGHT, run.parts.length) }, reader));
  for (let k = 0; k < results.length; k++) {
    const r = results[k];
    if (r.status === 'rejected') return { slab, complete: heads[k], failed: { index: k, error: r.reason, headStart: heads[k], bodyStart: bodies[k] } };
    if (r.value < run.parts[k].size) return { slab, complete: heads[k], failed: { index: k, got: r.value, headStart: heads[k], bodyStart: bodies[k] } };
  }
  return { slab, complete: at };
}

/** Reads a part's blob into the slab at `offset`; the bytes read (fewer than the size: the blob is shorter than the index says). */
async function readInto(blobs: BlobStore, p: PackablePart, slab: Buffer, offset: number): Promise<number> {
  const place = slab.subarray(offset, offset + p.size);
  const got = await blobs.readBuffer(p.blobKey, 0, p.size - 1, place);
  // A store that ignores `into` (S3) hands back its own memory.
  if (got.buffer !== slab.buffer || got.byteOffset !== place.byteOffset) got.copy(slab, offset, 0, Math.min(got.length, p.size));
  return Math.min(got.length, p.size);
}
