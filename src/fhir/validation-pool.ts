import os from 'node:os';
import path from 'node:path';
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import type { OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import type { FhirDefinitions } from './definitions';
import { collectValidationIssues } from './validation';

/**
 * Validation of many resources (a transaction Bundle) spread over worker threads: R4 validation
 * is the largest CPU cost of an ingest, and it is independent per resource. The main thread
 * takes a share too, chunk by chunk, when it is free. Workers start on the first large batch
 * (each loads the definitions once) and are unref'd, so they never keep the process alive.
 * Small batches, single-core machines and any worker failure fall back to validating on the
 * main thread.
 */

/** Batches smaller than this are validated on the main thread. */
export const MIN_PARALLEL_BATCH = 64;

/** What a worker answers for one chunk: its issues, or the error that stopped it. */
type ChunkCallback = (result: OperationOutcomeIssue[][] | Error) => void;

interface PoolWorker {
  worker: Worker;
  /**
   * Our end of the channel the worker answers on. A MessagePort (not the Worker itself) so that
   * this thread can also collect answers synchronously (receiveMessageOnPort) while it is busy
   * validating its own share, and hand the worker its next chunk at once.
   */
  port: MessagePort;
  /** Chunks sent and not yet answered, by message id. */
  pending: Map<number, ChunkCallback>;
}

/** Workers idle this long are stopped (and started again by the next large batch). */
const IDLE_MS = 15_000;

let pool: Promise<PoolWorker[]> | undefined;
/** The workers of `pool` once they have all started (work is handed to them without waiting a tick). */
let started: PoolWorker[] | undefined;
let idleTimer: NodeJS.Timeout | undefined;
let broken = false;
let nextId = 1;
/** Validations under way on the pool (the idle timer runs only when there are none). */
let activeJobs = 0;

function scheduleIdleStop(): void {
  if (idleTimer) clearTimeout(idleTimer);
  idleTimer = setTimeout(() => {
    const stopping = pool;
    pool = undefined;
    started = undefined;
    void stopping?.then((ws) => Promise.all(ws.map((w) => w.worker.terminate()))).catch(() => undefined);
  }, IDLE_MS);
  idleTimer.unref();
}

/** Worker threads to use beside the main thread: one per spare core, at most three. */
export function validationWorkerCount(): number {
  const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  return Math.max(0, Math.min(3, cores - 1));
}

function startWorker(): Promise<PoolWorker> {
  // From dist the worker is plain JS and inherits the process's node flags (so `node --cpu-prof
  // dist/main.js` profiles the workers too). From the TypeScript sources (tests, tsx) a small
  // CommonJS bootstrap registers tsx's require hook and loads the .ts entry point (`--import tsx`
  // does not make a .ts worker file loadable on Node 20: the workers never started under jest).
  const fromSource = __filename.endsWith('.ts');
  const file = path.join(__dirname, `validation-worker${fromSource ? '.ts' : '.js'}`);
  const { port1, port2 } = new MessageChannel();
  const options = { workerData: { port: port1 }, transferList: [port1] };
  const worker = fromSource
    ? new Worker(`require(${JSON.stringify(require.resolve('tsx/cjs'))}); require(${JSON.stringify(file)});`, { ...options, eval: true })
    : new Worker(file, options);
  worker.unref();
  port2.unref();
  const pw: PoolWorker = { worker, port: port2, pending: new Map() };
  return new Promise((resolve, reject) => {
    port2.on('message', (m: WorkerAnswer) => (m.ready ? resolve(pw) : answer(pw, m)));
    const fail = (err: Error) => {
      broken = true;
      const callbacks = [...pw.pending.values()];
      pw.pending.clear();
      port2.close();
      for (const cb of callbacks) cb(err);
      reject(err);
    };
    worker.on('error', fail);
    // terminate() (idle stop) exits with 1 and happens only with nothing pending; any other exit,
    // or one with work still pending, fails that work over to the main thread.
    worker.on('exit', (code) => (pw.pending.size > 0 || (code !== 0 && code !== 1)) && fail(new Error(`validation worker exited with ${code}`)));
  });
}

interface WorkerAnswer {
  ready?: boolean;
  id?: number;
  issues?: OperationOutcomeIssue[][];
  error?: string;
}

function answer(pw: PoolWorker, m: WorkerAnswer): void {
  const cb = pw.pending.get(m.id as number);
  if (!cb) return;
  pw.pending.delete(m.id as number);
  cb(m.error ? new Error(m.error) : (m.issues as OperationOutcomeIssue[][]));
}

/** Collects, without waiting, the answers the workers have already sent (their callbacks run now). */
function collectAnswers(workers: readonly PoolWorker[]): void {
  for (const pw of workers) {
    for (let m = receiveMessageOnPort(pw.port); m; m = receiveMessageOnPort(pw.port)) answer(pw, m.message as WorkerAnswer);
  }
}

function validateOn(pw: PoolWorker, resources: Resource[], cb: ChunkCallback): void {
  const id = nextId++;
  pw.pending.set(id, cb);
  try {
    pw.port.postMessage({ id, resources });
  } catch (err) {
    // A value that cannot be sent (DataCloneError) fails the chunk over to this thread.
    pw.pending.delete(id);
    cb(err instanceof Error ? err : new Error(String(err)));
  }
}

/** The issues of one resource; an unexpected failure of the validator is an error issue, so the resource is rejected, never let through. */
function validateFailClosed(defs: FhirDefinitions, resource: Resource): OperationOutcomeIssue[] {
  try {
    return collectValidationIssues(defs, resource);
  } catch (err) {
    return [{ severity: 'error', code: 'processing', diagnostics: `Validation failed: ${String((err as Error)?.message ?? err)}` }];
  }
}

/** Resources per message to a worker: small enough to share a Bundle out evenly, large enough that messages cost little. */
export const VALIDATION_CHUNK = 8;

/**
 * Chunks each worker holds at once: one being validated and the next ones already queued, so a
 * worker never waits for this thread to hand it work while this thread is busy.
 */
const WORKER_DEPTH = 3;

/** A validation under way (see {@link startValidation}). */
export interface ValidationJob {
  /** The issues of each resource, in input order. */
  readonly done: Promise<OperationOutcomeIssue[][]>;
  /** Validates here, on the calling thread, the chunks no worker has taken yet; call it when this thread has nothing else to do. */
  helpHere(): void;
}

/**
 * Starts validating resources (R4 + claimed fhir-profiles/ profiles) on the worker threads, a
 * chunk at a time, so that the calling thread can do other work meanwhile and then share what is
 * left ({@link ValidationJob.helpHere}). The workers take chunks from the front, each holding a
 * few, and are handed the next one as soon as an answer arrives, also while this thread is busy
 * validating: this thread takes chunks from the back and collects the workers' answers between
 * its own chunks, so every thread stays busy to the end. Small batches, machines without a
 * spare core and any worker failure validate on the calling thread.
 */
export function startValidation(defs: FhirDefinitions, resources: Resource[]): ValidationJob {
  const workers = validationWorkerCount();
  if (broken || workers === 0 || resources.length < MIN_PARALLEL_BATCH) {
    const issues = resources.map((r) => collectValidationIssues(defs, r));
    return { done: Promise.resolve(issues), helpHere: () => undefined };
  }
  const results: OperationOutcomeIssue[][] = new Array(resources.length);
  const chunks = Math.ceil(resources.length / VALIDATION_CHUNK);
  /** Chunks [front, back) are still to be taken. */
  let front = 0;
  let back = chunks;
  let finished = 0;
  let settle!: () => void;
  const allDone = new Promise<void>((resolve) => (settle = resolve));
  const range = (chunk: number): [number, number] => [chunk * VALIDATION_CHUNK, Math.min(resources.length, (chunk + 1) * VALIDATION_CHUNK)];
  const store = (start: number, issues: OperationOutcomeIssue[][]) => {
    issues.forEach((x, i) => (results[start + i] = x));
    if (++finished === chunks) settle();
  };
  const here = (start: number, end: number) => store(start, resources.slice(start, end).map((r) => validateFailClosed(defs, r)));
  let helping: readonly PoolWorker[] = [];
  const helpHere = () => {
    while (front < back) {
      here(...range(--back));
      collectAnswers(helping);
    }
  };
  /** Hands `pw` the next chunk from the front; on its answer, the one after that. */
  const feed = (pw: PoolWorker) => {
    if (front >= back) return;
    const [start, end] = range(front++);
    validateOn(pw, resources.slice(start, end), (result) => {
      if (result instanceof Error) {
        // A failed worker takes no more work; what is left is validated here.
        broken = true;
        here(start, end);
        helpHere();
        return;
      }
      store(start, result);
      if (!broken) feed(pw);
    });
  };
  const begin = (ready: readonly PoolWorker[]) => {
    helping = ready;
    for (let d = 0; d < WORKER_DEPTH; d++) for (const pw of ready) feed(pw);
  };
  if (idleTimer) clearTimeout(idleTimer);
  activeJobs++;
  if (started) {
    begin(started);
  } else {
    const starting = (pool ??= Promise.all(Array.from({ length: workers }, startWorker)));
    void starting.then(
      (ready) => {
        if (pool === starting) started = ready;
        begin(ready);
      },
      () => {
        broken = true;
        helpHere();
      },
    );
  }
  return {
    done: allDone.then(() => {
      if (--activeJobs === 0) scheduleIdleStop();
      return results;
    }),
    helpHere,
  };
}

/** Validates each resource, this thread taking its share; the issues come back in input order. */
export async function validateResources(defs: FhirDefinitions, resources: Resource[]): Promise<OperationOutcomeIssue[][]> {
  const job = startValidation(defs, resources);
  job.helpHere();
  return job.done;
}
