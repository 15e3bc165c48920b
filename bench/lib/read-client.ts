import http from 'node:http';
import { PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { RequestStats } from './stow-client';

/**
 * The read side of the load generator: GET requests (QIDO-RS, WADO-RS) over keep-alive
 * connections, timed from the request being sent to the last byte of the answer, every
 * answer checked. The same client drives imaging-lake and Orthanc.
 */

/** A DICOMweb service as the benchmark sees it. */
export interface DicomwebEndpoint {
  /** Name in tables, e.g. `imaging-lake` or `Orthanc`. */
  name: string;
  /** Process whose memory and CPU are measured. */
  pid: number;
  /** Origin, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** Path of the DICOMweb root without a trailing slash: `/dicomweb` (imaging-lake) or `/dicom-web` (Orthanc). */
  root: string;
  /** Headers every request carries (imaging-lake: the bearer token). */
  headers: Record<string, string>;
}

/** One answer. */
export interface ReadOutcome {
  status: number;
  /** Body bytes received. */
  bytes: number;
  ms: number;
  /** From the request being sent to the answer's head (status line and headers) being read. */
  headMs?: number;
  /** performance.now() when the request was sent. */
  sentAt?: number;
  /** The body, when asked for (small answers that must be parsed). */
  body?: Buffer;
  contentType?: string;
  problem?: string;
}

/** Totals over many GETs: the STOW totals plus bytes and result items. */
export interface ReadStats extends RequestStats {
  bytes: number;
  /** Result items counted by the checks (QIDO matches, metadata instances, frames). */
  items: number;
  /** Per timed request, in order: milliseconds to the answer's head (the server's work until it answers, plus loopback). */
  headMs?: number[];
  /** Per timed request, in order: milliseconds of the load generator's own garbage collection inside its timed window. */
  clientGcMs?: number[];
}

/** Media types the benchmarks ask for (PS3.18 8.7.3). */
export const ACCEPT = {
  json: 'application/dicom+json',
  /** What OHIF sends for frames: the stored encoding, whatever it is. */
  frames: 'multipart/related; type="application/octet-stream"; transfer-syntax=*',
  instances: 'multipart/related; type="application/dicom"; transfer-syntax=*',
} as const;

/** Keep-alive connections for reads. */
export function createReadAgent(sockets = 1): http.Agent {
  return new http.Agent({ keepAlive: true, maxSockets: sockets, maxFreeSockets: sockets });
}

/** GETs `path` (below the endpoint's origin). Never throws; problems are reported in the outcome. */
export function getOnce(
  endpoint: Pick<DicomwebEndpoint, 'baseUrl' | 'headers'>,
  agent: http.Agent,
  path: string,
  accept: string,
  options: { keepBody?: boolean; timeoutMs?: number } = {},
): Promise<ReadOutcome> {
  const url = new URL(path, endpoint.baseUrl);
  const started = performance.now();
  const timeoutMs = options.timeoutMs ?? 60_000;
  return new Promise<ReadOutcome>((resolve) => {
    let settled = false;
    let headMs: number | undefined;
    const finish = (o: Omit<ReadOutcome, 'ms'>) => {
      if (settled) return;
      settled = true;
      resolve({ ...o, ms: performance.now() - started, headMs, sentAt: started });
    };
    const req = http.request(
      { agent, method: 'GET', hostname: url.hostname, port: url.port, path: url.pathname + url.search, headers: { ...endpoint.headers, Accept: accept }, timeout: timeoutMs },
      (res) => {
        headMs = performance.now() - started;
        const chunks: Buffer[] = [];
        let bytes = 0;
        const keep = options.keepBody || (res.statusCode ?? 0) !== 200;
        res.on('data', (c: Buffer) => {
          bytes += c.length;
          if (keep) chunks.push(c);
        });
        res.on('error', (err) => finish({ status: res.statusCode ?? 0, bytes, problem: `response stream error: ${err.message}` }));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const body = keep ? Buffer.concat(chunks) : undefined;
          const contentType = res.headers['content-type'];
          if (status !== 200) {
            const warning = res.headers.warning ? ` ${String(res.headers.warning)}` : '';
            finish({ status, bytes, body, contentType, problem: `HTTP ${status} for ${path.slice(0, 160)}:${warning} ${body?.toString('utf8').slice(0, 200) ?? ''}`.trim() });
          } else {
            finish({ status, bytes, body, contentType });
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => finish({ status: 0, bytes: 0, problem: `request error for ${path.slice(0, 160)}: ${err.message}` }));
    req.end();
  });
}

/** One request of a latency series: where to go and how to judge the answer. */
export interface ReadRequest {
  path: string;
  accept: string;
  keepBody?: boolean;
  /** Returns the number of result items, or a string describing what is wrong. */
  check?: (o: ReadOutcome) => number | string;
}

/**
 * Sends `warmup` untimed requests, then `count` timed ones, one after another (concurrency 1:
 * latency, not throughput), built by `make(i)` (negative i for the warm-up).
 */
export async function runReadSeries(
  endpoint: DicomwebEndpoint,
  count: number,
  warmup: number,
  make: (i: number) => ReadRequest,
  timeoutMs = 60_000,
): Promise<ReadStats> {
  const agent = createReadAgent(1);
  const stats: ReadStats = { requests: count, ok: 0, failures: 0, failureSamples: [], referenced: 0, latenciesMs: [], bytes: 0, items: 0, headMs: [], clientGcMs: [] };
  const windows: Array<[number, number]> = [];
  const gcs = watchGarbageCollection();
  try {
    for (let i = -warmup; i < count; i++) {
      const r = make(i);
      const o = await getOnce(endpoint, agent, r.path, r.accept, { keepBody: r.keepBody, timeoutMs });
      let problem = o.problem;
      let items = 0;
      if (!problem && r.check) {
        const verdict = r.check(o);
        if (typeof verdict === 'string') problem = verdict;
        else items = verdict;
      }
      // The load generator's garbage (a parsed 800 kB answer is ~10 MB of objects) is collected
      // between requests, while the server waits for the next one: left to V8, it is collected
      // inside a later request's timed window and charged to the server. The young generation
      // after every answer (a scavenge: synchronous, a few ms); the whole heap only once it has
      // grown by CLIENT_GARBAGE_BYTES, and followed by a pause: a full collection after every
      // request left V8's background sweeping competing with the server for the next request's
      // CPU (QIDO /studies?PatientID= p50 at 2,000 instances 5.8 ms against 3.2 without it).
      if (collectOwnGarbageIfGrown()) await new Promise((resolve) => setTimeout(resolve, AFTER_COLLECTION_MS));
      else collectOwnGarbage('minor');
      // Warm-up answers are not judged: a failing request fails again, timed, and is counted there.
      if (i < 0) continue;
      stats.latenciesMs.push(o.ms);
      stats.headMs!.push(o.headMs ?? o.ms);
      windows.push([o.sentAt ?? 0, (o.sentAt ?? 0) + o.ms]);
      stats.bytes += o.bytes;
      stats.items += items;
      if (problem) {
        stats.failures++;
        if (stats.failureSamples.length < 5) stats.failureSamples.push(problem);
      } else {
        stats.ok++;
      }
    }
  } finally {
    agent.destroy();
    stats.clientGcMs = gcs.overlaps(windows);
  }
  return stats;
}

let collection: ((options: { type: 'major' | 'minor'; execution: 'sync' }) => void) | undefined;
/** How much the load generator's heap may grow before runReadSeries collects it between requests. */
const CLIENT_GARBAGE_BYTES = 48 << 20;
/** The pause after such a collection, for V8's background threads to finish before the next timed request. */
const AFTER_COLLECTION_MS = 20;
let heapAfterCollection = 0;

/** collectOwnGarbage() once the heap grew by CLIENT_GARBAGE_BYTES since the last one; true when it ran. */
export function collectOwnGarbageIfGrown(): boolean {
  if (v8.getHeapStatistics().used_heap_size - heapAfterCollection < CLIENT_GARBAGE_BYTES) return false;
  collectOwnGarbage();
  heapAfterCollection = v8.getHeapStatistics().used_heap_size;
  return true;
}

/** A garbage collection of this process (the load generator's), outside any timed window: full, or of the young generation. */
export function collectOwnGarbage(type: 'major' | 'minor' = 'major'): void {
  if (!collection) {
    // --expose-gc set at run time puts gc() on contexts made after it, not on this one.
    v8.setFlagsFromString('--expose-gc');
    collection = vm.runInNewContext('gc') as typeof collection;
  }
  collection!({ type, execution: 'sync' });
}

/**
 * Records this process's garbage collections (perf_hooks 'gc' entries) from now on; overlaps()
 * stops recording and gives, per window [start, end] of performance.now(), the milliseconds of
 * collection inside it: time the load generator was paused, not time the server took.
 */
export function watchGarbageCollection(): { overlaps(windows: ReadonlyArray<readonly [number, number]>): number[] } {
  const entries: PerformanceEntry[] = [];
  const observer = new PerformanceObserver((list) => entries.push(...list.getEntries()));
  observer.observe({ entryTypes: ['gc'] });
  return {
    overlaps(windows) {
      entries.push(...observer.takeRecords());
      observer.disconnect();
      return windows.map(([start, end]) => {
        let ms = 0;
        for (const e of entries) ms += Math.max(0, Math.min(end, e.startTime + e.duration) - Math.max(start, e.startTime));
        return ms;
      });
    },
  };
}

/** Checks a DICOM JSON array answer; returns its length, or what is wrong. */
export function jsonArrayItems(o: ReadOutcome, expect: { min?: number; exactly?: number } = {}): number | string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(o.body?.toString('utf8') ?? '');
  } catch {
    return `answer is not JSON (${o.contentType ?? 'no content type'})`;
  }
  if (!Array.isArray(parsed)) return 'answer is not a JSON array';
  if (expect.exactly !== undefined && parsed.length !== expect.exactly) return `expected ${expect.exactly} items, got ${parsed.length}`;
  if (expect.min !== undefined && parsed.length < expect.min) return `expected at least ${expect.min} items, got ${parsed.length}`;
  return parsed.length;
}

/** A small deterministic PRNG (mulberry32), so every run asks the same questions. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
