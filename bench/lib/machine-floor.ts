import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

/**
 * What this machine can do at best, measured in the same run as the server: sequential write
 * with fsync and read of the same number of bytes on the same disk, small fsynced files, and
 * SHA-256 on one core. The server has to hash and durably write every byte it stores, so
 * these bound what STOW-RS can reach here.
 */

const CHUNK = 1024 * 1024;
const run = promisify(execFile);

/** Sequential write + fsync and read-back of one file. */
export interface DiskFloor {
  bytes: number;
  writeSeconds: number;
  writeMBps: number;
  readSeconds: number;
  readMBps: number;
  /** How the read was done: `O_DIRECT (dd)` bypasses the page cache; `page cache` does not. */
  readMethod: string;
}

/** Writes `bytes` in 1 MiB chunks to a fresh file under `dir`, fsyncs it, then reads it back. */
export async function measureDiskFloor(dir: string, bytes: number): Promise<DiskFloor> {
  const work = await mkdtemp(path.join(dir, 'floor-'));
  const file = path.join(work, 'seq');
  const block = randomBytes(CHUNK);
  try {
    const t0 = performance.now();
    const fh = await open(file, 'w');
    try {
      for (let done = 0; done < bytes; done += CHUNK) {
        const n = Math.min(CHUNK, bytes - done);
        await fh.write(block, 0, n);
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    const writeSeconds = (performance.now() - t0) / 1000;
    const read = await readBack(file, bytes);
    return { bytes, writeSeconds, writeMBps: bytes / 1e6 / writeSeconds, readSeconds: read.seconds, readMBps: bytes / 1e6 / read.seconds, readMethod: read.method };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function readBack(file: string, bytes: number): Promise<{ seconds: number; method: string }> {
  // dd with iflag=direct reads from the device, not from the pages we just wrote.
  try {
    const t0 = performance.now();
    await run('dd', [`if=${file}`, 'of=/dev/null', 'bs=4M', 'iflag=direct'], { maxBuffer: 1024 * 1024 });
    return { seconds: (performance.now() - t0) / 1000, method: 'O_DIRECT (dd)' };
  } catch {
    const t0 = performance.now();
    const fh = await open(file, 'r');
    const buf = Buffer.allocUnsafe(CHUNK);
    try {
      let done = 0;
      while (done < bytes) {
        const { bytesRead } = await fh.read(buf, 0, CHUNK, done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
    } finally {
      await fh.close();
    }
    return { seconds: (performance.now() - t0) / 1000, method: 'page cache' };
  }
}

/** Small files written one after another, each fsynced with its directory, as a durable blob store must. */
export interface SmallFileFloor {
  files: number;
  fileBytes: number;
  seconds: number;
  filesPerSecond: number;
}

/** Writes `count` files of `fileBytes` one at a time: write, fsync file, fsync directory. */
export async function measureSmallFileFloor(dir: string, count: number, fileBytes: number): Promise<SmallFileFloor> {
  const work = await mkdtemp(path.join(dir, 'floor-small-'));
  const data = randomBytes(fileBytes);
  try {
    const t0 = performance.now();
    for (let i = 0; i < count; i++) {
      const file = path.join(work, String(i));
      await writeFile(file, data);
      const fh = await open(file, 'r+');
      await fh.sync();
      await fh.close();
      const d = await open(work, 'r');
      await d.sync();
      await d.close();
    }
    const seconds = (performance.now() - t0) / 1000;
    for (let i = 0; i < count; i++) await unlink(path.join(work, String(i))).catch(() => undefined);
    return { files: count, fileBytes, seconds, filesPerSecond: count / seconds };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** SHA-256 throughput of one core over `bytes` bytes (1 MiB updates, as a stream would feed it). */
export async function measureSha256(bytes: number): Promise<{ bytes: number; seconds: number; MBps: number }> {
  const block = randomBytes(CHUNK);
  const hash = createHash('sha256');
  const t0 = performance.now();
  for (let done = 0; done < bytes; done += CHUNK) hash.update(block);
  hash.digest();
  const seconds = (performance.now() - t0) / 1000;
  return { bytes, seconds, MBps: bytes / 1e6 / seconds };
}
