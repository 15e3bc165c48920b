import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, utimes } from 'node:fs/promises';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { BlobStoreUnavailableError, type BlobStore } from '../../../src/storage/blob-store';
import { createS3BlobStore, type S3BlobStoreOptions } from '../../../src/storage/s3-blob-store';
import { startS3Server, type S3TestServer } from '../../helpers/s3-server';
import { describeBlobStoreContract, putBytes, readAll, sha256Hex } from '../../unit/storage/blob-store-contract';

let server: S3TestServer;
let raw: S3Client;

beforeAll(async () => {
  server = await startS3Server();
  raw = new S3Client({
    endpoint: server.endpoint,
    region: server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
  });
});

afterAll(async () => {
  raw?.destroy();
  await server?.dispose();
});

/** A store on the shared server, isolated by a fresh random prefix and staging directory. */
async function openStore(extra: Partial<S3BlobStoreOptions> = {}) {
  const stagingDir = await mkdtemp(path.join(os.tmpdir(), 'imaging-lake-s3-staging-'));
  const prefix = `t-${randomBytes(5).toString('hex')}/`;
  const store = createS3BlobStore({
    bucket: server.bucket,
    prefix,
    endpoint: server.endpoint,
    region: server.region,
    forcePathStyle: true,
    stagingDir,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    ...extra,
  });
  return {
    store,
    prefix,
    stagingDir,
    cleanup: async () => {
      await store.close();
      await rm(stagingDir, { recursive: true, force: true });
    },
  };
}

describeBlobStoreContract('s3 (s3rver over HTTP)', openStore);

describe('s3 blob store', () => {
  let subject: Awaited<ReturnType<typeof openStore>>;
  let store: BlobStore;
  beforeEach(async () => {
    subject = await openStore();
    store = subject.store;
  });
  afterEach(async () => {
    await subject.cleanup();
  });

  test('objects are named <prefix>blobs/<sha256> and hold exactly the bytes', async () => {
    const bytes = randomBytes(10_000);
    const { key } = await putBytes(store, bytes);
    const got = await raw.send(new GetObjectCommand({ Bucket: server.bucket, Key: `${subject.prefix}blobs/${key}` }));
    expect(Buffer.from(await got.Body!.transformToByteArray()).equals(bytes)).toBe(true);
  });

  test('a prefix without a trailing slash still gets one', async () => {
    const bare = `bare-${randomBytes(4).toString('hex')}`;
    const other = await openStore({ prefix: bare });
    try {
      const { key } = await putBytes(other.store, Buffer.from('prefixed'));
      const head = await raw.send(new HeadObjectCommand({ Bucket: server.bucket, Key: `${bare}/blobs/${key}` }));
      expect(head.ContentLength).toBe(8);
    } finally {
      await other.cleanup();
    }
  });

  test('blobs from 16 MiB up go as multipart uploads and come back intact', async () => {
    const size = 40 * 1024 * 1024 + 123;
    const bytes = randomBytes(size);
    const started = process.hrtime.bigint();
    const committed = await putBytes(store, bytes, 1024 * 1024);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    process.stdout.write(`  s3rver stage+commit (multipart) 40 MB: ${(size / 1048576 / seconds).toFixed(0)} MB/s\n`);
    expect(committed).toMatchObject({ key: sha256Hex(bytes), size, existed: false });
    const back = await readAll(await store.read(committed.key));
    expect(createHash('sha256').update(back).digest('hex')).toBe(committed.key);
    expect((await store.stat(committed.key))?.size).toBe(size);
    const tail = await readAll(await store.readRange(committed.key, size - 100, size + 100));
    expect(tail.equals(bytes.subarray(size - 100))).toBe(true);
  });

  test('an object of the wrong size under a content key is replaced, not trusted', async () => {
    const bytes = Buffer.from('the real instance bytes');
    await raw.send(
      new PutObjectCommand({ Bucket: server.bucket, Key: `${subject.prefix}blobs/${sha256Hex(bytes)}`, Body: 'torn' }),
    );
    const committed = await putBytes(store, bytes);
    expect(committed.existed).toBe(false);
    expect((await readAll(await store.read(committed.key))).equals(bytes)).toBe(true);
  });

  test('an old existing blob is re-stamped on commit without error', async () => {
    const bytes = Buffer.from('sent again after a long time');
    const { key } = await putBytes(store, bytes);
    const file = path.join(server.directory, server.bucket, `${subject.prefix}blobs`, `${key}._S3rver_object`);
    const old = new Date(Date.now() - 86_400_000);
    await utimes(file, old, old);
    const again = await putBytes(store, bytes);
    expect(again.existed).toBe(true);
    expect((await readAll(await store.read(key))).equals(bytes)).toBe(true);
  });
});

describe('s3 blob store when S3 goes away', () => {
  test('operations reject with BlobStoreUnavailableError within seconds, and work again after restart', async () => {
    const subject = await openStore();
    const { store } = subject;
    try {
      const kept = await putBytes(store, Buffer.from('stored before the outage'));
      await server.stop();

      const attempts: Array<[string, () => Promise<unknown>]> = [
        ['stat', () => store.stat(kept.key)],
        ['read', () => store.read(kept.key)],
        ['readRange', () => store.readRange(kept.key, 0, 3)],
        ['delete', () => store.delete(sha256Hex(Buffer.from('other')))],
        ['commit', () => putBytes(store, Buffer.from('written during the outage'))],
        ['list', async () => { for await (const _ of store.list()) void _; }],
        ['checkHealth', () => store.checkHealth()],
      ];
      for (const [name, run] of attempts) {
        const started = Date.now();
        const err = await run().then(() => null, (e: unknown) => e);
        expect({ name, error: (err as Error | null)?.name }).toEqual({ name, error: 'BlobStoreUnavailableError' });
        expect(err).toBeInstanceOf(BlobStoreUnavailableError);
        expect(Date.now() - started).toBeLessThan(10_000);
      }
      // The failed commit left no spool file behind.
      expect(await readdir(subject.stagingDir)).toEqual([]);

      await server.restart();
      await expect(store.checkHealth()).resolves.toBeUndefined();
      expect((await readAll(await store.read(kept.key))).toString()).toBe('stored before the outage');
      const after = await putBytes(store, Buffer.from('written after the outage'));
      expect(after.existed).toBe(false);
    } finally {
      await server.restart().catch(() => undefined);
      await subject.cleanup();
    }
  });

  test('an endpoint that accepts connections but never answers fails fast too', async () => {
    const sockets: Socket[] = [];
    const silent = createServer((socket) => void sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as AddressInfo;
    const subject = await openStore({ endpoint: `http://127.0.0.1:${port}`, responseTimeoutMs: 1000 });
    try {
      const started = Date.now();
      await expect(subject.store.stat(sha256Hex(Buffer.from('x')))).rejects.toBeInstanceOf(BlobStoreUnavailableError);
      // Three attempts of one second each, plus backoff.
      expect(Date.now() - started).toBeLessThan(6000);
    } finally {
      await subject.cleanup();
      sockets.forEach((s) => s.destroy());
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  test('a read cut off mid-stream fails with BlobStoreUnavailableError, not a short blob', async () => {
    const subject = await openStore();
    try {
      const bytes = randomBytes(8 * 1024 * 1024);
      const { key } = await putBytes(subject.store, bytes, 1024 * 1024);
      const stream = await subject.store.read(key);
      let received = 0;
      const consumed = pipeline(stream, async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          received += chunk.length;
          if (received >= 1024 * 1024 && received - chunk.length < 1024 * 1024) await server.stop();
        }
      });
      await expect(consumed).rejects.toBeInstanceOf(BlobStoreUnavailableError);
      expect(received).toBeLessThan(bytes.length);
    } finally {
      await server.restart().catch(() => undefined);
      await subject.cleanup();
    }
  });
});
