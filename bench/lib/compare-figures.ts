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
 * credited with those only, and the request counts as failed).
 */
export async function measureStow(
  servers: ComparedServer[],
  rep: number,
  requests: PreparedRequest[],
  concurrency: number,
  figure: Figure,
  per: 'inst' | 'MB',
  repair = false,
): Promise<void> {
  const instances = requests.reduce((n, r) => n + r.instances, 0);
  const mb = requests.reduce((n, r) => n + r.dicomBytes, 0) / 1e6;
  for (const s of orderFor(servers, rep)) {
    const m = await measurePhase(s, s.database, () => sendAll(stowTargetOf(s), requests, concurrency, 600_000));
    const share = instances ? m.stats.referenced / instances : 0;
    s.tally.sent += instances;
    s.tally.acknowledged += m.stats.referenced;
    push(figure, s.name, { value: per === 'inst' ? m.stats.referenced / m.seconds : (mb * share) / m.seconds, units: per === 'inst' ? instances : mb, m });
    if (repair) await resendIncomplete(s, requests, m.stats.incomplete ?? []);
  }
}

/**
 * Sends the requests a server did not fully acknowledge again, one at a time and off the clock
 * (up to three tries each), so that both servers hold the same population before it is queried.
 * The timed figure keeps crediting only what the first answers acknowledged.
 */
async function resendIncomplete(s: ComparedServer, requests: PreparedRequest[], incomplete: number[]): Promise<void> {
  let pending = incomplete.map((i) => requests[i]!);
  for (let attempt = 0; attempt < 3 && pending.length > 0; attempt++) {
    s.tally.resent = (s.tally.resent ?? 0) + pending.length;
    const stats = await sendAll(stowTargetOf(s), pending, 1, 600_000);
    const left = new Set(stats.incomplete ?? []);
    s.tally.repaired = (s.tally.repaired ?? 0) + pending.length - left.size;
    pending = pending.filter((_, i) => left.has(i));
  }
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
