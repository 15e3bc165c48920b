import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import type { FhirDefinitions } from './definitions';
import { collectValidationIssues } from './validation';

/**
 * Validation of many resources (a transaction Bundle) spread over worker threads: R4 validation
 * is the largest CPU cost of an ingest, and it is independent per resource. The main thread
 * takes a share too. Workers start on the first large batch (each loads the definitions once)
 * and are unref'd, so they never keep the process alive. Small batches, single-core machines
 * and any worker failure fall back to validating on the main thread.
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
let idleTimer: NodeJS.Timeout | undefined;
let broken = false;
let nextId = 1;

function scheduleIdleStop(): void {
  if (idleTimer) clearTimeout(idleTimer);
  idleTimer = setTimeout(() => {
    const stopping = pool;
    pool = undefined;
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
  // From the TypeScript sources (tests, tsx) the worker runs through tsx; from dist it is plain JS.
  const fromSource = __filename.endsWith('.ts');
  const file = path.join(__dirname, `validation-worker${fromSource ? '.ts' : '.js'}`);
  const worker = new Worker(file, { execArgv: fromSource ? ['--import', 'tsx'] : [] });
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
    worker.on('exit', (code) => code !== 0 && code !== 1 && fail(new Error(`validation worker exited with ${code}`)));
  });
}

function validateOn(pw: PoolWorker, resources: Resource[]): Promise<OperationOutcomeIssue[][]> {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pw.pending.set(id, { resolve, reject });
    pw.worker.postMessage({ id, resources });
  });
}

/** Validates each resource (R4 + claimed fhir-profiles/ profiles); the issues come back in input order. */
export async function validateResources(defs: FhirDefinitions, resources: Resource[]): Promise<OperationOutcomeIssue[][]> {
  const inline = () => resources.map((r) => collectValidationIssues(defs, r));
  const workers = validationWorkerCount();
  if (broken || workers === 0 || resources.length < MIN_PARALLEL_BATCH) return inline();
  try {
    pool ??= Promise.all(Array.from({ length: workers }, startWorker));
    const ready = await pool;
    const shares = ready.length + 1;
    const size = Math.ceil(resources.length / shares);
    const remote = ready.map((pw, i) => validateOn(pw, resources.slice((i + 1) * size, (i + 2) * size)));
    const local = resources.slice(0, size).map((r) => collectValidationIssues(defs, r));
    const all = [local, ...(await Promise.all(remote))].flat();
    scheduleIdleStop();
    return all;
  } catch {
    broken = true;
    return inline();
  }
}
