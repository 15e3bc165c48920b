import { randomBytes } from 'node:crypto';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** The part of the s3rver (3.x, untyped) API used here: a Koa app with a filesystem store. */
interface S3rverApp {
  callback(): http.RequestListener;
}
type S3rverCtor = new (options: Record<string, unknown>) => S3rverApp;

// s3rver ships no type declarations.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const S3rver = require('s3rver') as S3rverCtor;

export interface S3TestServer {
  /** `http://127.0.0.1:<port>`, for path-style access. */
  endpoint: string;
  /** A fresh random bucket, already created. */
  bucket: string;
  region: string;
  /** s3rver's data directory (objects live at `<bucket>/<key>._S3rver_object`). */
  directory: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Closes the port and drops open connections, as if S3 went away. */
  stop(): Promise<void>;
  /** Listens again on the same port and directory (stored objects survive). */
  restart(): Promise<void>;
  /** Stops and removes the data directory. */
  dispose(): Promise<void>;
}

/**
 * Starts s3rver over real HTTP on 127.0.0.1 (an OS-chosen port) with its own temp directory
 * and a fresh random bucket. Nothing global is set: callers pass endpoint and keys explicitly.
 */
export async function startS3Server(): Promise<S3TestServer> {
  const directory = await mkdtemp(path.join(os.tmpdir(), 'imaging-lake-s3rver-'));
  const bucket = `test-${randomBytes(6).toString('hex')}`;
  // s3rver keeps a bucket as a directory; creating it here avoids depending on PUT Bucket.
  await mkdir(path.join(directory, bucket));

  // Our own http.Server around s3rver's request handler, because s3rver's run() never
  // rejects when listen fails and its close() waits for keep-alive sockets.
  const app = new S3rver({ directory, silent: true, vhostBuckets: false, allowMismatchedSignatures: false });
  let server: http.Server | null = null;
  let port = 0;

  async function listen(): Promise<void> {
    const s = http.createServer(app.callback());
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => {
        s.off('error', reject);
        resolve();
      });
    });
    port = (s.address() as AddressInfo).port;
    server = s;
  }

  async function stop(): Promise<void> {
    const s = server;
    if (!s) return;
    server = null;
    const closed = new Promise<void>((resolve) => s.close(() => resolve()));
    // In-flight and keep-alive sockets would otherwise keep the "stopped" server answering.
    s.closeAllConnections();
    await closed;
  }

  await listen();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    bucket,
    region: 'us-east-1',
    directory,
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    stop,
    async restart() {
      await stop();
      await listen();
    },
    async dispose() {
      await stop();
      await rm(directory, { recursive: true, force: true });
    },
  };
}
