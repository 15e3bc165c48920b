import { constants } from 'node:fs';
import { access, link, lstat, mkdir, open, readdir, rename, stat, unlink, utimes } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { randomUUID } from 'node:crypto';
import { BlobNotFoundError, type BlobStore, type CommittedBlob, type StagedBlob } from './blob-store';
import { assertBlobKey, assertByteRange, isBlobKey } from './blob-key';
import { errnoCode, toBlobStoreError } from './fs-error';
import { createSpooledBlob, dropSpooledBlob, ownSpooledBlob, removeStaleFiles, type SpooledBlob } from './spooled-blob';

export interface FsBlobStoreOptions {
  /** Directory holding `blobs/` and `staging/`; both must be on the same filesystem (hard links). */
  root: string;
}

/** Read buffer per open blob stream: big enough for disk throughput, small enough for many readers. */
const READ_HIGH_WATER_MARK = 256 * 1024;

/**
 * Creates the filesystem backend: `<root>/blobs/<aa>/<bb>/<sha256>`, staging in `<root>/staging/`.
 * A commit is durable (file and directory entries fsynced) before it resolves.
 */
export function createFsBlobStore(options: FsBlobStoreOptions): BlobStore {
  const root = path.resolve(options.root);
  const blobsDir = path.join(root, 'blobs');
  const stagingDir = path.join(root, 'staging');
  const owner = {};
  /** Staging files of this process still in use: never swept, whatever their age. */
  const active = new Set<string>();
  let ready: Promise<void> | null = null;

  /** Creates blobs/ and staging/ once; retried after a failure. */
  function ensureDirs(): Promise<void> {
    ready ??= Promise.all([mkdirDurable(blobsDir), mkdirDurable(stagingDir)]).then(
      () => undefined,
      (err: unknown) => {
        ready = null;
        throw toBlobStoreError(err, `creating ${root}`);
      },
    );
    return ready;
  }

  function blobPath(key: string): string {
    assertBlobKey(key);
    return path.join(blobsDir, key.slice(0, 2), key.slice(2, 4), key);
  }

  async function openBlob(key: string) {
    const file = blobPath(key);
    try {
      return await open(file, 'r');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') throw new BlobNotFoundError(key);
      throw toBlobStoreError(err, `opening blob ${key}`);
    }
  }

  async function place(staged: SpooledBlob): Promise<CommittedBlob> {
    let sha256 = '';
    try {
      const done = await staged.done;
      sha256 = done.sha256;
      const size = done.size;
      const final = blobPath(sha256);
      const dir = path.dirname(final);
      // The bytes must be on disk before a name points at them, or a crash leaves a torn blob.
      const fh = await open(staged.path, 'r+');
      try {
        await fh.chmod(0o444); // before the sync, so the mode is flushed with the bytes
        await fh.sync();
      } finally {
        await fh.close();
      }
      await mkdirDurable(dir);
      const existed = await linkNoReplace(staged.path, final);
      if (existed) {
        // An orphan sweeper judges by age; a fresh mtime keeps it from deleting this blob
        // before the index row that now points at it is written.
        const now = new Date();
        await utimes(final, now, now);
      }
      // Also when it existed: a concurrent committer may have linked it without its fsync done yet.
      await fsyncDir(dir);
      return { key: sha256, sha256, size, existed };
    } catch (err) {
      throw toBlobStoreError(err, `committing blob ${sha256}`);
    } finally {
      // Linked into place, or a failed commit (final: the caller restages); the spool name goes either way.
      await staged.closed; // a spool still being opened would otherwise reappear after the unlink
      await unlink(staged.path).catch(() => undefined);
      active.delete(staged.path);
    }
  }

  return {
    kind: 'fs',

    stage(): StagedBlob {
      const staged = createSpooledBlob(owner, stagingDir, ensureDirs);
      active.add(staged.path);
      return staged;
    },

    async commit(staged: StagedBlob): Promise<CommittedBlob> {
      const own = ownSpooledBlob(owner, staged);
      if (own.settled === 'discarded') throw new Error('staged blob was discarded');
      own.settled ??= place(own);
      return own.settled;
    },

    async discard(staged: StagedBlob): Promise<void> {
      let own: SpooledBlob;
      try {
        own = ownSpooledBlob(owner, staged);
      } catch {
        return;
      }
      // After a commit the spool file is already linked into place; it is not ours to delete.
      if (own.settled) return;
      own.settled = 'discarded';
      await dropSpooledBlob(own);
      active.delete(own.path);
    },

    async read(key: string): Promise<Readable> {
      const fh = await openBlob(key);
      return fh.createReadStream({ highWaterMark: READ_HIGH_WATER_MARK });
    },

    async readRange(key: string, start: number, end: number): Promise<Readable> {
      assertByteRange(start, end);
      const fh = await openBlob(key);
      let size: number;
      try {
        size = (await fh.stat()).size;
      } catch (err) {
        await fh.close();
        throw toBlobStoreError(err, `reading blob ${key}`);
      }
      if (start >= size) {
        await fh.close();
        throw new RangeError(`range [${start}, ${end}] starts past the end of blob ${key} (${size} bytes)`);
      }
      return fh.createReadStream({ start, end: Math.min(end, size - 1), highWaterMark: READ_HIGH_WATER_MARK });
    },

    async stat(key: string) {
      const file = blobPath(key);
      try {
        const st = await stat(file);
        return { size: st.size, lastModified: st.mtime };
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') return null;
        throw toBlobStoreError(err, `stat blob ${key}`);
      }
    },

    async delete(key: string): Promise<void> {
      const file = blobPath(key);
      try {
        await unlink(file);
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') return;
        throw toBlobStoreError(err, `deleting blob ${key}`);
      }
    },

    list(): AsyncIterable<{ key: string; lastModified: Date }> {
      return walkBlobs(blobsDir);
    },

    async cleanStaging(olderThanMs: number): Promise<number> {
      return removeStaleFiles(stagingDir, olderThanMs, active);
    },

    async checkHealth(): Promise<void> {
      await ensureDirs();
      const probe = path.join(stagingDir, `.health-${randomUUID()}`);
      try {
        await access(blobsDir, constants.R_OK | constants.W_OK | constants.X_OK);
        const fh = await open(probe, 'wx', 0o600);
        try {
          await fh.writeFile('ok');
          await fh.sync();
        } finally {
          await fh.close();
        }
      } catch (err) {
        throw toBlobStoreError(err, 'health probe');
      } finally {
        await unlink(probe).catch(() => undefined);
      }
    },

    async close(): Promise<void> {
      // Nothing is held open between calls; streams handed out close themselves.
    },
  };
}

/**
 * Hard-links `from` to `to` unless `to` exists. Returns true when it already existed.
 * link(2) fails atomically with EEXIST, so two concurrent commits of the same bytes agree
 * on which one stored it; rename(2) would silently replace.
 */
async function linkNoReplace(from: string, to: string): Promise<boolean> {
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
async function mkdirDurable(dir: string): Promise<void> {
  const first = await mkdir(dir, { recursive: true });
  if (first === undefined) return;
  for (let d = dir; ; d = path.dirname(d)) {
    await fsyncDir(path.dirname(d));
    if (d === first || path.dirname(d) === d) break;
  }
}

/** Flushes a directory's entries (new names, renames, links) to stable storage. */
async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Yields every blob under `blobs/<aa>/<bb>/`, ignoring anything that is not a well-placed key. */
async function* walkBlobs(blobsDir: string): AsyncGenerator<{ key: string; lastModified: Date }> {
  const pair = /^[0-9a-f]{2}$/;
  for (const aa of await listDir(blobsDir)) {
    if (!pair.test(aa)) continue;
    for (const bb of await listDir(path.join(blobsDir, aa))) {
      if (!pair.test(bb)) continue;
      const dir = path.join(blobsDir, aa, bb);
      for (const name of await listDir(dir)) {
        if (!isBlobKey(name) || name.slice(0, 2) !== aa || name.slice(2, 4) !== bb) continue;
        try {
          const st = await lstat(path.join(dir, name));
          if (st.isFile()) yield { key: name, lastModified: st.mtime };
        } catch (err) {
          if (errnoCode(err) !== 'ENOENT') throw toBlobStoreError(err, `listing ${dir}`);
        }
      }
    }
  }
}

/** Sorted directory entries; a directory that vanished (or never existed) is empty. */
async function listDir(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw toBlobStoreError(err, `listing ${dir}`);
  }
}
