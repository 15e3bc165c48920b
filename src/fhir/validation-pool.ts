import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
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

interface PoolWorker {
  worker: Worker;
  pending: Map<number, { resolve: (v: OperationOutcomeIssue[][]) => void; reject: (e: Error) => void }>;
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
  // From the TypeScript sources (tests, tsx) the worker runs through tsx; from dist it is plain JS
  // and inherits the process's node flags (so `node --cpu-prof dist/main.js` profiles the workers too).
  const fromSource = __filename.endsWith('.ts');
  const file = path.join(__dirname, `validation-worker${fromSource ? '.ts' : '.js'}`);
  const worker = new Worker(file, fromSource ? { execArgv: ['--import', 'tsx'] } : {});
  worker.unref();
  const pw: PoolWorker = { worker, pending: new Map() };
  return new Promise((resolve, reject) => {
    worker.on('message', (m: { ready?: boolean; id?: number; issues?: OperationOutcomeIssue[][]; error?: string }) => {
      if (m.ready) return resolve(pw);
      const p = pw.pending.get(m.id as number);
      if (!p) return;
      pw.pending.delete(m.id as number);
      if (m.error) p.reject(new Error(m.error));
      else p.resolve(m.issues as OperationOutcomeIssue[][]);
    });
    const fail = (err: Error) => {
      broken = true;
      for (const p of pw.pending.values()) p.reject(err);
      pw.pending.clear();
      reject(err);
    };
    worker.on('error', fail);
    // terminate() (idle stop) exits with 1 and happens only with nothing pending; any other exit,
    // or one with work still pending, fails that work over to the main thread.
    worker.on('exit', (code) => (pw.pending.size > 0 || (code !== 0 && code !== 1)) && fail(new Error(`validation worker exited with ${code}`)));
  });
}

function validateOn(pw: PoolWorker, resources: Resource[]): Promise<OperationOutcomeIssue[][]> {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pw.pending.set(id, { resolve, reject });
    pw.worker.postMessage({ id, resources });
  });
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
export const VALIDATION_CHUNK = 16;

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
 * left ({@link ValidationJob.helpHere}): each thread takes the next chunk when it is free, which
 * keeps all of them busy whatever else they have to do. Small batches, machines without a spare
 * core and any worker failure validate on the calling thread.
 */
export function startValidation(defs: FhirDefinitions, resources: Resource[]): ValidationJob {
  const workers = validationWorkerCount();
  if (broken || workers === 0 || resources.length < MIN_PARALLEL_BATCH) {
    const issues = resources.map((r) => collectValidationIssues(defs, r));
    return { done: Promise.resolve(issues), helpHere: () => undefined };
  }
  const results: OperationOutcomeIssue[][] = new Array(resources.length);
  const chunks = Math.ceil(resources.length / VALIDATION_CHUNK);
  let next = 0;
  let finished = 0;
  let settle!: () => void;
  const allDone = new Promise<void>((resolve) => (settle = resolve));
  const take = (): [number, number] | undefined => {
    if (next >= chunks) return undefined;
    const start = next++ * VALIDATION_CHUNK;
    return [start, Math.min(resources.length, start + VALIDATION_CHUNK)];
  };
  const store = (start: number, issues: OperationOutcomeIssue[][]) => {
    issues.forEach((x, i) => (results[start + i] = x));
    if (++finished === chunks) settle();
  };
  const here = (start: number, end: number) => store(start, resources.slice(start, end).map((r) => validateFailClosed(defs, r)));
  const helpHere = () => {
    for (let range = take(); range; range = take()) here(...range);
  };
  const drain = async (pw: PoolWorker) => {
    for (let range = take(); range; range = take()) {
      try {
        store(range[0], await validateOn(pw, resources.slice(...range)));
      } catch {
        // A failed worker takes no more work; what is left is validated here.
        broken = true;
        here(...range);
        helpHere();
        return;
      }
    }
  };
  if (idleTimer) clearTimeout(idleTimer);
  activeJobs++;
  if (started) {
    for (const pw of started) void drain(pw);
  } else {
    const starting = (pool ??= Promise.all(Array.from({ length: workers }, startWorker)));
    void starting.then(
      (ready) => {
        if (pool === starting) started = ready;
        ready.forEach((pw) => void drain(pw));
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
