/**
 * Search latency of the FHIR benchmark: each query is sent one after another over a keep-alive
 * connection (the time of one user's request on an otherwise idle server), after warm-up
 * requests, and every answer is checked (status, entry count, what the entries must satisfy).
 */

/** One measured search. */
export interface QuerySpec {
  name: string;
  /** The path and query of the i-th request (below the server's base URL). */
  url(i: number): string;
  /** Returns a problem with the answer, or null when it is right. */
  check(bundle: SearchBundle): string | null;
  /** Target p95 in ms. */
  targetP95Ms?: number;
}

/** The parts of a searchset Bundle the checks read. */
export interface SearchBundle {
  entry?: Array<{ search?: { mode?: string }; resource: Record<string, any> }>;
}

/** Measured figures of one query. */
export interface QueryResult {
  name: string;
  example: string;
  n: number;
  p50: number;
  p95: number;
  max: number;
  /** Mean entries per answer (matches, includes). */
  matches: number;
  includes: number;
  failures: string[];
}

/** Value at quantile q of sorted values (nearest rank). */
export function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/** Runs `warmup` then `n` requests of a query and summarises their latency. */
export async function measureQuery(baseUrl: string, authorization: string, spec: QuerySpec, n: number, warmup: number): Promise<QueryResult> {
  const times: number[] = [];
  const failures: string[] = [];
  let matches = 0;
  let includes = 0;
  for (let i = 0; i < warmup + n; i++) {
    const url = spec.url(i);
    const t0 = performance.now();
    let res: Response;
    try {
      res = await fetch(`${baseUrl}${url}`, { headers: { Authorization: authorization, Accept: 'application/fhir+json' } });
    } catch (err) {
      // A keep-alive connection the server closed while idle (after the long load) fails once.
      if (i > 0) throw new Error(`GET ${url} failed: ${String((err as Error & { cause?: unknown }).cause ?? err)}`);
      res = await fetch(`${baseUrl}${url}`, { headers: { Authorization: authorization, Accept: 'application/fhir+json' } });
    }
    const text = await res.text();
    const ms = performance.now() - t0;
    if (i < warmup) continue;
    times.push(ms);
    if (res.status !== 200) {
      failures.push(`${url}: ${res.status} ${text.slice(0, 200)}`);
      continue;
    }
    const bundle = JSON.parse(text) as SearchBundle;
    const problem = spec.check(bundle);
    if (problem) failures.push(`${url}: ${problem}`);
    matches += (bundle.entry ?? []).filter((e) => e.search?.mode === 'match').length;
    includes += (bundle.entry ?? []).filter((e) => e.search?.mode === 'include').length;
  }
  const sorted = [...times].sort((a, b) => a - b);
  return {
    name: spec.name,
    example: spec.url(0),
    n,
    p50: quantile(sorted, 0.5),
    p95: quantile(sorted, 0.95),
    max: sorted[sorted.length - 1],
    matches: matches / n,
    includes: includes / n,
    failures,
  };
}
