import { measurePhase } from './phase-meter';
import type { BenchDatabase } from './postgres';
import { ACCEPT, jsonArrayItems, runReadSeries, seededRandom, type DicomwebEndpoint, type ReadRequest, type ReadStats } from './read-client';
import type { StoredSeries } from './compare-data';
import { quantile, sendAll, type PreparedRequest, type RequestStats, type StowTarget } from './stow-client';
import type { PhaseMeasurement } from './stow-types';

/**
 * The figures of the Orthanc comparison and how each is measured: the same requests against
 * each server, repetitions interleaved (imaging-lake first on even repetitions, Orthanc first
 * on odd ones) so that a machine that gets busier during the run skews both alike.
 */

/** A server under comparison, with what its measurements need. */
export interface ComparedServer extends DicomwebEndpoint {
  /** Its database when it is a PostgreSQL server on this machine (backend CPU is read from /proc). */
  database?: BenchDatabase;
  /** Instances sent in STOW requests so far, and how many the answers acknowledged (ReferencedSOPSequence items). */
  tally: { sent: number; acknowledged: number; resent?: number; repaired?: number };
}

/** One measurement of one figure on one server. */
export interface Sample {
  value: number;
  /** Units the CPU cost is divided by (instances, MB or requests). */
  units: number;
  m: PhaseMeasurement & { stats: RequestStats };
}

/** A row of the comparison. */
export interface Figure {
  id: string;
  title: string;
  unit: 'inst/s' | 'MB/s' | 'ms';
  better: 'higher' | 'lower';
  /** The phase whose peak RSS this figure's samples count towards. */
  phase: string;
  /** What the CPU cost column is per: instance, MB or request. */
  cpuPer: 'inst' | 'MB' | 'req';
  samples: Record<string, Sample[]>;
  /** Set on the rows that carry a project target. */
  target?: { text: string; pass: (il: number, orthanc: number) => boolean };
  /** Servers this figure could not be measured on, and why (e.g. a peer that stored none of the data). */
  unmeasured?: Record<string, string>;
  /** Why the figure was measured on neither server (e.g. a scale the run cannot reach in its time). */
  skipped?: string;
  /** Said under the table (e.g. how many patients a QIDO figure left out, and why). */
  note?: string;
}

/** Median of the values (mean of the middle two for an even count). */
export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Median of a figure's samples on one server. */
export function figureValue(f: Figure, server: string): number {
  return median((f.samples[server] ?? []).map((s) => s.value));
}

/** Failed requests in a figure's samples: one server's, or all servers'. */
export function figureFailures(f: Figure, server?: string): number {
  const lists = server ? [f.samples[server] ?? []] : Object.values(f.samples);
  return lists.reduce((n, list) => n + list.reduce((m, s) => m + s.m.stats.failures, 0), 0);
}

/** How many times better imaging-lake is (> 1: imaging-lake better), whatever the direction of the unit. */
export function advantage(f: Figure, il: string, other: string): number {
  const a = figureValue(f, il);
  const b = figureValue(f, other);
  return f.better === 'higher' ? a / b : b / a;
}

/** Records that `figure` cannot be measured on `server`; the first reason given stays. */
export function markUnmeasured(figure: Figure, server: string, reason: string): void {
  (figure.unmeasured ??= {})[server] ??= reason;
}

/** A figure with no samples yet. */
export function newFigure(f: Omit<Figure, 'samples'>): Figure {
  return { ...f, samples: {} };
}

function push(f: Figure, server: string, s: Sample): void {
  (f.samples[server] ??= []).push(s);
}

/** Servers in the order of repetition `rep`. */
export function orderFor<T>(servers: T[], rep: number): T[] {
  return rep % 2 === 0 ? servers : [...servers].reverse();
}

/** Where a server takes STOW requests. */
export function stowTargetOf(s: DicomwebEndpoint): StowTarget {
  return { baseUrl: s.baseUrl, path: `${s.root}/studies`, headers: s.headers };
}

/**
 * Sends the same prepared STOW requests to each server in turn; records inst/s or MB/s of what
 * the answers acknowledged (a server that answers 200 for fewer instances than it was sent is
 * credited with those only, and the request counts as failed). Resolves with, per server, the
 * indices of the requests it did not fully acknowledge (after the resends, with `repair`), so
 * that the read figures ask only for what each server holds.
 */
export async function measureStow(
  servers: ComparedServer[],
  rep: number,
  requests: PreparedRequest[],
  concurrency: number,
  figure: Figure,
  per: 'inst' | 'MB',
  repair = false,
): Promise<Map<string, Set<number>>> {
  const instances = requests.reduce((n, r) => n + r.instances, 0);
  const mb = requests.reduce((n, r) => n + r.dicomBytes, 0) / 1e6;
  const incomplete = new Map<string, Set<number>>();
  for (const s of orderFor(servers, rep)) {
    const m = await measurePhase(s, s.database, () => sendAll(stowTargetOf(s), requests, concurrency, 600_000));
    const share = instances ? m.stats.referenced / instances : 0;
    s.tally.sent += instances;
    s.tally.acknowledged += m.stats.referenced;
    push(figure, s.name, { value: per === 'inst' ? m.stats.referenced / m.seconds : (mb * share) / m.seconds, units: per === 'inst' ? instances : mb, m });
    const missed = m.stats.incomplete ?? [];
    incomplete.set(s.name, new Set(repair ? await resendIncomplete(s, requests, missed) : missed));
  }
  return incomplete;
}

/**
 * Sends `requests` once to every server, off the clock (counted in the tallies, as stored): the
 * first requests of a kind on a fresh server run cold code (JIT compilation, first allocations),
 * which the timed repetitions that follow should not measure. The latency figures do the same
 * with their untimed requests.
 */
export async function warmUpStow(servers: ComparedServer[], requests: PreparedRequest[]): Promise<void> {
  const instances = requests.reduce((n, r) => n + r.instances, 0);
  for (const s of servers) {
    const stats = await sendAll(stowTargetOf(s), requests, 1, 600_000);
    s.tally.sent += instances;
    s.tally.acknowledged += stats.referenced;
  }
}

/** Pause before each round of resends: a busy index (Orthanc's PostgreSQL plugin under concurrent writers) gets time to settle. */
const RESEND_PAUSES_MS = [0, 1_000, 5_000];

/**
 * Sends the requests a server did not fully acknowledge again, one at a time and off the clock
 * (up to three tries each, the later ones after a pause): a store that collided with another writer
 * in an index with several connections (Orthanc's PostgreSQL plugin retries such collisions only a
 * few times itself) is the client's to retry. The timed figure keeps crediting only what the first
 * answers acknowledged. Resolves with the indices still incomplete.
 */
async function resendIncomplete(s: ComparedServer, requests: PreparedRequest[], incomplete: number[]): Promise<number[]> {
  let pending = [...incomplete];
  for (let attempt = 0; attempt < RESEND_PAUSES_MS.length && pending.length > 0; attempt++) {
    if (RESEND_PAUSES_MS[attempt]) await new Promise((resolve) => setTimeout(resolve, RESEND_PAUSES_MS[attempt]));
    s.tally.resent = (s.tally.resent ?? 0) + pending.length;
    const stats = await sendAll(stowTargetOf(s), pending.map((i) => requests[i]!), 1, 600_000);
    const left = new Set(stats.incomplete ?? []);
    s.tally.repaired = (s.tally.repaired ?? 0) + pending.length - left.size;
    pending = pending.filter((_, i) => left.has(i));
  }
  return pending;
}

/**
 * Sends `count` GETs (after `warmup`) to each server in turn, built by `make(server, i)`, and
 * records the p50 and p95 (two figures from the same requests).
 */
export async function measureLatency(
  servers: ComparedServer[],
  rep: number,
  count: number,
  warmup: number,
  make: (s: ComparedServer) => (i: number) => ReadRequest,
  p50: Figure,
  p95: Figure,
): Promise<void> {
  for (const s of orderFor(servers, rep)) {
    const m = await measurePhase(s, s.database, () => runReadSeries(s, count, warmup, make(s), 300_000));
    const n = m.stats.latenciesMs.length;
    push(p50, s.name, { value: quantile(m.stats.latenciesMs, 0.5), units: n, m });
    push(p95, s.name, { value: quantile(m.stats.latenciesMs, 0.95), units: n, m });
  }
}

/** Retrieves a whole study `count` times from each server in turn; records MB/s over the summed request times. */
export async function measureRetrieve(servers: ComparedServer[], rep: number, count: number, studyUID: string, studyBytes: number, figure: Figure): Promise<void> {
  for (const s of orderFor(servers, rep)) {
    const m = await measurePhase(s, s.database, () =>
      runReadSeries(s, count, 1, () => ({
        path: `${s.root}/studies/${studyUID}`,
        accept: ACCEPT.instances,
        check: (o) => (o.bytes >= studyBytes ? 1 : `retrieve answer has ${o.bytes} bytes, fewer than the ${studyBytes} stored`),
      })),
    );
    const seconds = m.stats.latenciesMs.reduce((a, b) => a + b, 0) / 1000;
    push(figure, s.name, { value: (m.stats as ReadStats).bytes / 1e6 / seconds, units: (m.stats as ReadStats).bytes / 1e6, m });
  }
}

/** QIDO by PatientID over the loaded population (four studies per patient, at least one must come back). */
export function qidoByPatient(patients: string[], seed: number): (s: ComparedServer) => (i: number) => ReadRequest {
  return (s) => {
    const r = seededRandom(seed);
    return () => ({
      path: `${s.root}/studies?PatientID=${patients[Math.floor(r() * patients.length)]}`,
      accept: ACCEPT.json,
      keepBody: true,
      check: (o) => jsonArrayItems(o, { min: 1 }),
    });
  };
}

/** Instance metadata of a random one of `series` (every instance must come back). */
export function seriesMetadata(series: StoredSeries[], seed: number): (s: ComparedServer) => (i: number) => ReadRequest {
  return (s) => {
    const r = seededRandom(seed);
    return () => {
      const x = series[Math.floor(r() * series.length)]!;
      return {
        path: `${s.root}/studies/${x.studyInstanceUID}/series/${x.seriesInstanceUID}/metadata`,
        accept: ACCEPT.json,
        keepBody: true,
        check: (o) => jsonArrayItems(o, { exactly: x.instances.length }),
      };
    };
  };
}

/** One random frame of a random one of the volumes, in its stored encoding. */
export function singleFrame(volumes: StoredSeries[], frameBytes: number, seed: number): (s: ComparedServer) => (i: number) => ReadRequest {
  return (s) => {
    const r = seededRandom(seed);
    return () => {
      const v = volumes[Math.floor(r() * volumes.length)]!;
      const inst = v.instances[0]!;
      const frame = 1 + Math.floor(r() * inst.frames);
      return {
        path: `${s.root}/studies/${v.studyInstanceUID}/series/${v.seriesInstanceUID}/instances/${inst.sopInstanceUID}/frames/${frame}`,
        accept: ACCEPT.frames,
        check: (o) => (o.bytes >= frameBytes ? 1 : `frame answer has ${o.bytes} bytes, fewer than the ${frameBytes} of a frame`),
      };
    };
  };
}
