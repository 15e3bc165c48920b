import { createReadStream } from 'node:fs';
import { mkdir, unlink, writeFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { randomUUID } from 'node:crypto';
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type ListObjectsV2CommandOutput,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { BlobNotFoundError, BlobStoreUnavailableError, type BlobStore, type CommittedBlob, type StagedBlob } from './blob-store';
import { assertBlobKey, assertByteRange, isBlobKey } from './blob-key';
import { createSpooledBlob, dropSpooledBlob, ownSpooledBlob, removeStaleFiles, type SpooledBlob, type SpoolMemoryOptions } from './spooled-blob';
import { createS3Client } from './s3-client';
import { isNotFound, toS3BlobStoreError } from './s3-error';
import { parseContentRange, sliceBody } from './s3-body';

export interface S3BlobStoreOptions {
  bucket: string;
  /** Key prefix inside the bucket; a trailing `/` is added when missing. Objects are `<prefix>blobs/<sha256>`. */
  prefix?: string;
  /** For S3-compatible servers (MinIO, s3rver, Ceph); omit for AWS. */
  endpoint?: string;
  /** Defaults to us-east-1 (S3-compatible servers mostly ignore it). */
  region?: string;
  forcePathStyle?: boolean;
  /** Local directory for spool files: bytes wait here until their hash (and so their key) is known. */
  stagingDir: string;
  /** Static keys; without them the SDK's standard credential chain applies. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Blobs this size or larger go up as multipart uploads. Default 16 MiB. */
  multipartThreshold?: number;
  /** Page size for list(); S3 caps it at 1000. */
  listPageSize?: number;
  /**
   * Time allowed until response headers for HEAD/GET/LIST/DELETE (each of up to 3 attempts).
   * A hung endpoint thus fails in about 3x this. Uploads are not bound by it. Default 3 s.
   */
  responseTimeoutMs?: number;
  /** A socket idle this long fails its request; also applies while a slow consumer pauses a read. Default 30 s. */
  socketTimeoutMs?: number;
  /** Where SDK warnings go (default: console, minus the per-failure streaming notice). */
  logger?: { warn(...args: unknown[]): void };
  /** A client to use instead of building one (shared pools, custom middleware); close() leaves it open. */
  client?: S3Client;
  /** In-memory spooling of small parts (defaults: 2 MiB per part, the process-wide 64 MiB budget). */
  memory?: SpoolMemoryOptions;
}

const MiB = 1024 * 1024;
/** Part size for multipart uploads; lib-storage holds up to queueSize parts in memory per upload. */
const PART_SIZE = 8 * MiB;
const UPLOAD_QUEUE_SIZE = 4;
/** CopyObject refuses sources above 5 GiB; such blobs are not refreshed in place. */
const MAX_COPY_SIZE = 5 * 1024 * MiB;
/** An existing blob older than this is re-stamped on commit (see `commit`). */
const REFRESH_AFTER_MS = 10 * 60 * 1000;
/** Our own attempts for single-request uploads: the SDK does not retry streaming bodies. */
const PUT_ATTEMPTS = 3;

/**
 * Creates the S3 backend: bytes are spooled locally while hashed, then uploaded to
 * `<prefix>blobs/<sha256>` on commit (PutObject, or multipart from 16 MiB).
 * `presign` is not offered: @aws-sdk/s3-request-presigner is not a dependency.
 */
export function createS3BlobStore(options: S3BlobStoreOptions): BlobStore {
  const { bucket, stagingDir } = options;
  const prefix = normalizePrefix(options.prefix);
  const blobsPrefix = `${prefix}blobs/`;
  const multipartThreshold = options.multipartThreshold ?? 16 * MiB;
  const listPageSize = Math.min(1000, Math.max(1, options.listPageSize ?? 1000));
  const ownsClient = !options.client;
  const client = options.client ?? createS3Client(options);
  /** Send options for requests without a body: headers must arrive soon (the timer stops at the headers). */
  const fast = { requestTimeout: options.responseTimeoutMs ?? 3000 };
  const owner = {};
  /** Spool files of this process still in use: never swept, whatever their age. */
  const active = new Set<string>();
  let ready: Promise<void> | null = null;

  function ensureStagingDir(): Promise<void> {
    ready ??= mkdir(stagingDir, { recursive: true }).then(
      () => undefined,
      (err: unknown) => {
        ready = null;
        throw toS3BlobStoreError(err, `creating ${stagingDir}`);
      },
    );
    return ready;
  }

  function objectKey(key: string): string {
    assertBlobKey(key);
    return blobsPrefix + key;
  }

  async function head(key: string): Promise<{ size: number; lastModified: Date } | null> {
    try {
      const out = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: objectKey(key) }), fast);
      return { size: out.ContentLength ?? 0, lastModified: out.LastModified ?? new Date(0) };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw toS3BlobStoreError(err, `stat blob ${key}`);
    }
  }

  async function get(key: string, range?: string) {
    try {
      return await client.send(new GetObjectCommand({ Bucket: bucket, Key: objectKey(key), Range: range }), fast);
    } catch (err) {
      if (isNotFound(err)) throw new BlobNotFoundError(key);
      throw toS3BlobStoreError(err, `reading blob ${key}`);
    }
  }

  /** Single PUT with a fresh body per attempt (a consumed stream cannot be resent). */
  async function putObject(body: () => Readable | Buffer, key: string, sha256: string, size: number): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await client.send(
          new PutObjectCommand({
            Bucket: bucket,
            Key: objectKey(key),
            Body: body(),
            ContentLength: size,
            ContentType: 'application/octet-stream',
            // S3 recomputes this and refuses the PUT on mismatch: the key is proven to match the bytes.
            ChecksumSHA256: Buffer.from(sha256, 'hex').toString('base64'),
          }),
        );
        return;
      } catch (err) {
        const mapped = toS3BlobStoreError(err, `uploading blob ${key}`);
        // Retry dropped connections; a timed-out attempt already waited out the idle guard.
        const retryable = mapped instanceof BlobStoreUnavailableError && (err as Error).name !== 'TimeoutError';
        if (attempt >= PUT_ATTEMPTS || !retryable) throw mapped;
        await delay(100 * 4 ** (attempt - 1));
      }
    }
  }

  /** Multipart upload from the spool file or memory; parts are buffers, so the SDK retries them itself. */
  async function uploadMultipart(body: Readable | Buffer, key: string, size: number): Promise<void> {
    try {
      const upload = new Upload({
        client,
        queueSize: UPLOAD_QUEUE_SIZE,
        partSize: PART_SIZE,
        leavePartsOnError: false,
        params: {
          Bucket: bucket,
          Key: objectKey(key),
          Body: body,
          ContentType: 'application/octet-stream',
          // Per-part SHA-256, verified by S3 as each part arrives.
          ChecksumAlgorithm: 'SHA256',
        },
      });
      await upload.done();
    } catch (err) {
      throw toS3BlobStoreError(err, `uploading blob ${key}`);
    }
    // Parts are checked one by one; the assembled size is the cheap whole-object check left.
    const stored = await head(key);
    if (!stored || stored.size !== size) {
      throw new Error(`multipart upload of blob ${key} stored ${stored?.size ?? 'nothing'}, expected ${size} bytes`);
    }
  }

  /** Re-stamps LastModified of an old existing blob so an orphan sweeper cannot take it before its index row lands. */
  async function refresh(key: string, existing: { size: number; lastModified: Date }): Promise<void> {
    if (Date.now() - existing.lastModified.getTime() < REFRESH_AFTER_MS || existing.size > MAX_COPY_SIZE) return;
    const source = [bucket, ...objectKey(key).split('/')].map(encodeURIComponent).join('/');
    await client.send(
      new CopyObjectCommand({
        Bucket: bucket,
        Key: objectKey(key),
        CopySource: source,
        MetadataDirective: 'REPLACE',
        ContentType: 'application/octet-stream',
      }),
    );
  }

  async function place(staged: SpooledBlob, fence?: Promise<unknown>): Promise<CommittedBlob> {
    try {
      const { sha256, size } = await staged.done;
      // Nothing is uploaded or refreshed before the claim holds (see BlobStore.commit).
      await fence;
      const existing = await head(sha256);
      // Same key, other size: a damaged object; the fresh bytes replace it.
      if (existing && existing.size === size) {
        await refresh(sha256, existing).catch((err: unknown) => {
          throw toS3BlobStoreError(err, `refreshing blob ${sha256}`);
        });
        return { key: sha256, sha256, size, existed: true };
      }
      // Small parts never touched the disk: upload them from memory.
      const chunks = staged.chunks;
      const bytes = chunks ? (chunks.length === 1 ? chunks[0] : Buffer.concat(chunks as Buffer[], size)) : null;
      const body = (): Readable | Buffer => bytes ?? createReadStream(staged.path, { highWaterMark: MiB });
      if (size >= multipartThreshold) await uploadMultipart(body(), sha256, size);
      else await putObject(body, sha256, sha256, size);
      return { key: sha256, sha256, size, existed: false };
    } finally {
      // A failed commit is final (the caller restages), so the spool goes either way.
      await staged.closed; // a spool still being opened would otherwise reappear after the unlink
      staged.releaseMemory();
      if (staged.spilled) await unlink(staged.path).catch(() => undefined);
      active.delete(staged.path);
    }
  }

  async function readRange(key: string, start: number, end: number): Promise<Readable> {
    assertByteRange(start, end);
    let out;
    try {
      out = await get(key, `bytes=${start}-${end}`);
    } catch (err) {
      if ((err as { name?: string }).name === 'InvalidRange') {
        throw new RangeError(`range [${start}, ${end}] starts past the end of blob ${key}`);
      }
      throw err;
    }
    const window = parseContentRange(out.ContentRange);
    const total = window.total ?? (out.ContentRange ? undefined : out.ContentLength);
    if (total !== undefined && start >= total) {
      (out.Body as Readable).destroy();
      throw new RangeError(`range [${start}, ${end}] starts past the end of blob ${key} (${total} bytes)`);
    }
    const length = total === undefined ? end - start + 1 : Math.min(end, total - 1) - start + 1;
    return sliceBody(out.Body as Readable, window, start, length, key);
  }

  return {
    kind: 's3',

    stage(): StagedBlob {
      const staged = createSpooledBlob(owner, stagingDir, ensureStagingDir, options.memory);
      active.add(staged.path);
      return staged;
    },

    async commit(staged: StagedBlob, fence?: Promise<unknown>): Promise<CommittedBlob> {
      const own = ownSpooledBlob(owner, staged);
      if (own.settled === 'discarded') throw new Error('staged blob was discarded');
      own.settled ??= place(own, fence);
      return own.settled;
    },

    async discard(staged: StagedBlob): Promise<void> {
      let own: SpooledBlob;
      try {
        own = ownSpooledBlob(owner, staged);
      } catch {
        return;
      }
      if (own.settled) return;
      own.settled = 'discarded';
      await dropSpooledBlob(own);
      active.delete(own.path);
    },

    async read(key: string): Promise<Readable> {
      const out = await get(key);
      return sliceBody(out.Body as Readable, { first: 0 }, 0, out.ContentLength ?? Infinity, key);
    },

    readRange,

    async readBuffer(key: string, start: number, end: number): Promise<Buffer> {
      const chunks: Buffer[] = [];
      for await (const chunk of await readRange(key, start, end)) chunks.push(chunk as Buffer);
      return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
    },

    stat: head,

    async delete(key: string): Promise<void> {
      try {
        await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: objectKey(key) }), fast);
      } catch (err) {
        if (isNotFound(err)) return;
        throw toS3BlobStoreError(err, `deleting blob ${key}`);
      }
    },

    list(): AsyncIterable<{ key: string; lastModified: Date }> {
      return listBlobs(client, bucket, blobsPrefix, listPageSize, fast);
    },

    async cleanStaging(olderThanMs: number): Promise<number> {
      return removeStaleFiles(stagingDir, olderThanMs, active);
    },

    async checkHealth(): Promise<void> {
      // Both halves of the write path: the local spool disk and a PUT to the bucket.
      await ensureStagingDir();
      const probeFile = `${stagingDir}/.health-${randomUUID()}`;
      const probeKey = `${prefix}health/${randomUUID()}`;
      try {
        await writeFile(probeFile, 'ok', { flag: 'wx' });
        await client.send(new PutObjectCommand({ Bucket: bucket, Key: probeKey, Body: 'ok' }), fast);
        await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: probeKey }), fast);
      } catch (err) {
        throw toS3BlobStoreError(err, 'health probe');
      } finally {
        await unlink(probeFile).catch(() => undefined);
      }
    },

    async close(): Promise<void> {
      if (ownsClient) client.destroy();
    },
  };
}

/** Pages through ListObjectsV2 under `blobsPrefix`, yielding only well-formed keys. */
async function* listBlobs(
  client: S3Client,
  bucket: string,
  blobsPrefix: string,
  pageSize: number,
  sendOptions: { requestTimeout: number },
): AsyncGenerator<{ key: string; lastModified: Date }> {
  let token: string | undefined;
  do {
    let page: ListObjectsV2CommandOutput;
    try {
      page = await client.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: blobsPrefix, MaxKeys: pageSize, ContinuationToken: token }),
        sendOptions,
      );
    } catch (err) {
      throw toS3BlobStoreError(err, 'listing blobs');
    }
    for (const item of page.Contents ?? []) {
      const key = item.Key?.slice(blobsPrefix.length);
      if (key && isBlobKey(key)) yield { key, lastModified: item.LastModified ?? new Date(0) };
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
}

/** `''` stays empty; anything else ends with exactly one `/`. */
function normalizePrefix(prefix: string | undefined): string {
  if (!prefix) return '';
  return prefix.endsWith('/') ? prefix : `${prefix}/`;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
