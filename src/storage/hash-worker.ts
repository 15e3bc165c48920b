import { Worker } from 'node:worker_threads';

/**
 * SHA-256 of large parts on a worker thread, over blocks in shared memory (no copy): the main
 * thread, which parses every request, then only copies each socket read into a block, while the
 * hash (about half a millisecond per MB on one core) runs on the other core, block by block as
 * the blocks fill. One worker serves the process; it is started at the first large part and does
 * not keep the process alive.
 */

/** The worker: one hash per stream id, fed blocks in the order they were sent. */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hashes = new Map();
parentPort.on('message', (m) => {
  try {
    if (m.op === 'update') {
      let h = hashes.get(m.stream);
      if (!h) hashes.set(m.stream, (h = createHash('sha256')));
      h.update(new Uint8Array(m.memory, m.offset, m.length));
      parentPort.postMessage({ req: m.req });
    } else if (m.op === 'digest') {
      const h = hashes.get(m.stream) || createHash('sha256');
      hashes.delete(m.stream);
      parentPort.postMessage({ req: m.req, digest: h.digest('hex') });
    } else {
      hashes.delete(m.stream);
    }
  } catch (err) {
    hashes.delete(m.stream);
    parentPort.postMessage({ req: m.req, error: String(err && err.message || err) });
  }
});
`;

interface Pending {
  resolve: (digest: string | undefined) => void;
  reject: (err: Error) => void;
}

class HashWorker {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextReq = 1;
  failed = false;

  constructor() {
    this.worker = new Worker(WORKER_SOURCE, { eval: true });
    this.worker.on('message', (m: { req: number; digest?: string; error?: string }) => {
      const p = this.pending.get(m.req);
      this.pending.delete(m.req);
      if (m.error !== undefined) p?.reject(new Error(`hashing failed: ${m.error}`));
      else p?.resolve(m.digest);
    });
    const fail = (err: Error) => {
      this.failed = true;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    this.worker.on('error', (err) => fail(err));
    this.worker.on('exit', (code) => fail(new Error(`hash worker exited with code ${code}`)));
    // After the listeners (adding one may take a reference again): the worker never keeps the process alive.
    this.worker.unref();
  }

  request(message: Record<string, unknown>): Promise<string | undefined> {
    if (this.failed) return Promise.reject(new Error('hash worker is gone'));
    const req = this.nextReq++;
    return new Promise((resolve, reject) => {
      this.pending.set(req, { resolve, reject });
      this.worker.postMessage({ ...message, req });
    });
  }

  /** Stops the thread; hashes in progress fail as when it dies. */
  async terminate(): Promise<void> {
    await this.worker.terminate();
  }

  send(message: Record<string, unknown>): void {
    if (!this.failed) this.worker.postMessage({ ...message, req: 0 });
  }
}

let shared: HashWorker | null = null;
let nextStream = 1;

function worker(): HashWorker {
  if (!shared || shared.failed) shared = new HashWorker();
  return shared;
}

/**
 * Stops the hash worker, as a crash of its thread would: the hashes in progress fail (their parts
 * fail as storage errors) and the next large part starts a new worker. For fault tests.
 */
export async function terminateHashWorker(): Promise<void> {
  const current = shared;
  shared = null;
  await current?.terminate();
}

/**
 * One SHA-256 computed on the hash worker from views of shared memory, in the order given.
 * A view must not change until its `update` has resolved.
 */
export class OffThreadHash {
  private readonly stream = nextStream++;
  private readonly hasher = worker();

  /** Hashes `view` (a view of a SharedArrayBuffer) next; resolves once the worker is done with it. */
  update(view: Uint8Array): Promise<void> {
    return this.hasher
      .request({ op: 'update', stream: this.stream, memory: view.buffer, offset: view.byteOffset, length: view.byteLength })
      .then(() => undefined);
  }

  /** The hex digest of everything given, once every update before it is done. */
  async digest(): Promise<string> {
    const digest = await this.hasher.request({ op: 'digest', stream: this.stream });
    if (typeof digest !== 'string') throw new Error('hash worker gave no digest');
    return digest;
  }

  /** Forgets the hash (a part given up). */
  drop(): void {
    this.hasher.send({ op: 'drop', stream: this.stream });
  }
}
