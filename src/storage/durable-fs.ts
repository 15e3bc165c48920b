import fs from 'node:fs';
import { link, lstat, mkdir, open, rename } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode } from './fs-error';
import { writeAllWith } from './spooled-blob';

/**
 * The durable file steps of the filesystem blob store: bytes on stable storage before a name
 * points at them, names (new files, links, directories) flushed with their directory.
 */

/**
 * Create-exclusive, write-only, synchronous writes: each write returns once its bytes and the
 * file's metadata are on stable storage, as after an fsync (POSIX synchronized I/O file
 * integrity completion), so a small blob needs no fsync call of its own.
 */
const CREATE_SYNCED = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_SYNC;

/**
 * Writes in-memory bytes to a fresh staging file, read-only and on stable storage, in one open:
 * the file is linked to its content address next, so it must be complete on disk first.
 */
export async function writeDurable(file: string, chunks: readonly Buffer[], prepare: () => Promise<void>): Promise<void> {
  await prepare();
  // Created read-only (0444 applies to later opens; this descriptor may still write), so no chmod.
  // Plain descriptors and callbacks: a FileHandle and a promise per call cost about twice the CPU.
  // O_SYNC makes the write the flush: one thread-pool call less per blob than write + fsync.
  const fd = await fdCall<number>((cb) => fs.open(file, CREATE_SYNCED, 0o444, cb));
  try {
    await writeAllFd(fd, chunks);
  } finally {
    await fdCall<void>((cb) => fs.close(fd, cb));
  }
}

/** Writes every buffer at the descriptor's position, resuming after short writes. */
function writeAllFd(fd: number, buffers: readonly Buffer[]): Promise<void> {
  return writeAllWith((pending) => fdCall<number>((cb) => fs.writev(fd, pending, cb)), buffers);
}

/** One callback-style fs call as a promise. */
export function fdCall<T>(call: (cb: (err: NodeJS.ErrnoException | null, value: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => call((err, value) => (err ? reject(err) : resolve(value))));
}

/** Makes a spilled staging file read-only and flushes it to stable storage. */
export async function syncSpool(file: string): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    await fh.chmod(0o444); // before the sync, so the mode is flushed with the bytes
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Hard-links `from` to `to` unless `to` exists. Returns true when it already existed.
 * link(2) fails atomically with EEXIST, so two concurrent commits of the same bytes agree
 * on which one stored it; rename(2) would silently replace.
 */
export async function linkNoReplace(from: string, to: string): Promise<boolean> {
  try {
    await link(from, to);
    return false;
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'EEXIST') return true;
    // Filesystems without hard links: check then rename (identical bytes, so a lost race is harmless).
    if (code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'ENOSYS' || code === 'EMLINK') {
      try {
        await lstat(to);
        return true;
      } catch (e) {
        if (errnoCode(e) !== 'ENOENT') throw e;
      }
      await rename(from, to);
      return false;
    }
    throw err;
  }
}

/** mkdir -p that also fsyncs the parent of every directory it created, so the path survives power loss. */
export async function mkdirDurable(dir: string): Promise<void> {
  const first = await mkdir(dir, { recursive: true });
  if (first === undefined) return;
  await fsyncParents(dir, first);
}

/** Flushes the parents of `dir` and of its ancestors up to `first` (the directories mkdir -p made), all at once. */
export async function fsyncParents(dir: string, first: string): Promise<void> {
  const parents: string[] = [];
  for (let d = dir; ; d = path.dirname(d)) {
    parents.push(path.dirname(d));
    if (d === first || path.dirname(d) === d) break;
  }
  await Promise.all(parents.map(fsyncDir));
}

/** Flushes a directory's entries (new names, renames, links) to stable storage. */
export async function fsyncDir(dir: string): Promise<void> {
  const fd = await fdCall<number>((cb) => fs.open(dir, 'r', cb));
  try {
    await fdCall<void>((cb) => fs.fsync(fd, cb));
  } finally {
    await fdCall<void>((cb) => fs.close(fd, cb));
  }
}
