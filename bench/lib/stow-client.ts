import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/**
 * A minimal STOW-RS client for load generation (PS3.18 10.5): multipart/related bodies of
 * application/dicom parts, sent over keep-alive connections, with every answer checked.
 */

/** One request body built before the clock starts. */
export interface PreparedRequest {
  body: Buffer;
  contentType: string;
  /** Instances in the body. */
  instances: number;
  /** DICOM bytes in the body (without the multipart framing). */
  dicomBytes: number;
}

/** What one STOW answer said. */
export interface StowOutcome {
  status: number;
  /** Items in ReferencedSOPSequence (0008,1199). */
  referenced: number;
  /** Items in FailedSOPSequence (0008,1198). */
  failed: number;
  ms: number;
  /** Set when the request did not get a 200 with all instances referenced. */
  problem?: string;
}

/** Totals over many requests. */
export interface RequestStats {
  requests: number;
  ok: number;
  failures: number;
  /** Up to five problem descriptions, for the report. */
  failureSamples: string[];
  referenced: number;
  latenciesMs: number[];
  /** Indices (into the sent requests) of the requests that did not get every instance acknowledged. */
  incomplete?: number[];
}

/** Where STOW requests go and what they carry besides the body. */
export interface StowTarget {
  /** Server origin, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** Path of the Store Instances resource; default imaging-lake's `/dicomweb/studies`. */
  path?: string;
  /** Extra request headers, e.g. `Authorization: Bearer ...` (imaging-lake requires it on every route). */
  headers?: Record<string, string>;
}

const STOW_PATH = '/dicomweb/studies';

/** A boundary that cannot plausibly occur inside the parts. */
export function newBoundary(): string {
  return `imaging-lake-bench-${randomBytes(16).toString('hex')}`;
}

/** `multipart/related; type="application/dicom"; boundary=...` (PS3.18 8.6.1.2). */
export function multipartContentType(boundary: string): string {
  return `multipart/related; type="application/dicom"; boundary=${boundary}`;
}

/** Frames the given Part 10 instances as one multipart/related body. */
export function buildMultipartBody(instances: Buffer[]): PreparedRequest {
  const boundary = newBoundary();
  const pieces: Buffer[] = [];
  let dicomBytes = 0;
  for (const bytes of instances) {
    pieces.push(Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, 'latin1'), bytes, Buffer.from('\r\n'));
    dicomBytes += bytes.length;
  }
  pieces.push(Buffer.from(`--${boundary}--\r\n`, 'latin1'));
  return { body: Buffer.concat(pieces), contentType: multipartContentType(boundary), instances: instances.length, dicomBytes };
}

/** Multipart framing around one streamed instance: what goes before and after its bytes. */
export function multipartEnvelope(): { head: Buffer; tail: Buffer; contentType: string } {
  const boundary = newBoundary();
  return {
    head: Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, 'latin1'),
    tail: Buffer.from(`\r\n--${boundary}--\r\n`, 'latin1'),
    contentType: multipartContentType(boundary),
  };
}

/** Keep-alive connections, at most `concurrency` of them. */
export function createAgent(concurrency: number): http.Agent {
  return new http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
}

/**
 * POSTs one STOW request and checks the answer: status 200 and a ReferencedSOPSequence with
 * exactly `expected` items and no FailedSOPSequence. Never throws; problems are reported.
 */
export async function postStow(
  target: StowTarget,
  agent: http.Agent,
  body: Buffer | Readable,
  contentType: string,
  contentLength: number,
  expected: number,
  timeoutMs: number,
): Promise<StowOutcome> {
  const started = performance.now();
  const url = new URL(target.path ?? STOW_PATH, target.baseUrl);
  return new Promise<StowOutcome>((resolve) => {
    let settled = false;
    const finish = (o: Omit<StowOutcome, 'ms'>) => {
      if (settled) return;
      settled = true;
      resolve({ ...o, ms: performance.now() - started });
    };
    const req = http.request(
      {
        agent,
        method: 'POST',
        hostname: url.hostname,
        port: url.port,
        path: url.pathname,
        headers: { ...target.headers, 'Content-Type': contentType, 'Content-Length': String(contentLength), Accept: 'application/dicom+json' },
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => finish({ status: res.statusCode ?? 0, referenced: 0, failed: 0, problem: `response stream error: ${err.message}` }));
        res.on('end', () => finish(judge(res.statusCode ?? 0, Buffer.concat(chunks), expected, res.headers.warning)));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => finish({ status: 0, referenced: 0, failed: 0, problem: `request error: ${err.message}` }));
    if (Buffer.isBuffer(body)) {
      req.end(body);
    } else {
      // The server may answer (e.g. 413) before the upload ends; the answer is what counts.
      pipeline(body, req).catch(() => undefined);
    }
  });
}

function judge(status: number, raw: Buffer, expected: number, warning: string | string[] | undefined): Omit<StowOutcome, 'ms'> {
  let referenced = 0;
  let failed = 0;
  let parsed: Record<string, { Value?: unknown[] }> | null = null;
  try {
    parsed = raw.length ? (JSON.parse(raw.toString('utf8')) as Record<string, { Value?: unknown[] }>) : null;
  } catch {
    parsed = null;
  }
  if (parsed) {
    referenced = parsed['00081199']?.Value?.length ?? 0;
    failed = parsed['00081198']?.Value?.length ?? 0;
  }
  const result = { status, referenced, failed };
  if (status !== 200) {
    const why = [warning ? String(warning) : '', parsed ? '' : raw.toString('utf8').slice(0, 300)].filter(Boolean).join(' ');
    return { ...result, problem: `HTTP ${status}${why ? `: ${why.slice(0, 400)}` : ''}` };
  }
  if (!parsed) return { ...result, problem: 'HTTP 200 without a DICOM JSON body' };
  if (referenced !== expected || failed !== 0) {
    return { ...result, problem: `HTTP 200 but ${referenced}/${expected} referenced, ${failed} failed` };
  }
  return result;
}

/**
 * Sends all prepared requests with `concurrency` workers sharing one keep-alive agent,
 * each worker taking the next request as soon as its previous one is answered.
 */
export async function sendAll(target: StowTarget, requests: PreparedRequest[], concurrency: number, timeoutMs: number): Promise<RequestStats> {
  const agent = createAgent(concurrency);
  const stats: RequestStats = { requests: requests.length, ok: 0, failures: 0, failureSamples: [], referenced: 0, latenciesMs: [] };
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= requests.length) return;
      const r = requests[i]!;
      const o = await postStow(target, agent, r.body, r.contentType, r.body.length, r.instances, timeoutMs);
      record(stats, o);
      if (o.problem) (stats.incomplete ??= []).push(i);
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, requests.length) }, worker));
  } finally {
    agent.destroy();
  }
  return stats;
}

/** Adds one outcome to the totals. */
export function record(stats: RequestStats, o: StowOutcome): void {
  stats.latenciesMs.push(o.ms);
  stats.referenced += o.referenced;
  if (o.problem) {
    stats.failures++;
    if (stats.failureSamples.length < 5) stats.failureSamples.push(o.problem);
  } else {
    stats.ok++;
  }
}

/** The q-quantile (0..1) of the values, nearest-rank. */
export function quantile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
