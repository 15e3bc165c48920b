import { createHash } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseMediaType } from '../../src/dicomweb/media-type';
import { readMultipart } from '../../src/dicomweb/multipart';
import { createSyntheticInstance, type SyntheticInstanceOptions } from '../../src/generate/synthetic-dicom';
import { buildMultipart } from './multipart-body';

/**
 * A small DICOMweb client for the reliability suite: STOW-RS, WADO-RS and QIDO-RS over real
 * HTTP with a deadline on every request, and raw sockets for requests no HTTP client will send.
 */

export type DicomJsonBody = Record<string, { vr: string; Value?: any[] }>;

/** Bearer tokens by server origin: every request these helpers send to that origin carries it. */
const tokens = new Map<string, string>();

/** Makes every request to `baseUrl`'s origin carry `Authorization: Bearer <token>`. */
export function useToken(baseUrl: string, token: string): void {
  tokens.set(new URL(baseUrl).origin, token);
}

function authHeaders(url: string): Record<string, string> {
  const token = tokens.get(new URL(url).origin);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** The Authorization header line (CRLF-terminated, or empty) for raw requests to 127.0.0.1:`port`. */
export function authLine(port: number): string {
  const token = tokens.get(`http://127.0.0.1:${port}`);
  return token ? `Authorization: Bearer ${token}\r\n` : '';
}

export interface HttpOutcome {
  /** HTTP status, or 0 when no answer arrived (connection refused, reset, timed out). */
  status: number;
  /** Wall time until the body was read, ms. */
  ms: number;
  /** Why there was no answer (status 0). */
  error?: string;
  headers?: Headers;
}

export interface StowOutcome extends HttpOutcome {
  body: DicomJsonBody | null;
}

/** POSTs `parts` as one multipart/related STOW-RS request (PS3.18 10.5). */
export async function stow(
  baseUrl: string,
  parts: Buffer[],
  options: { timeoutMs?: number; path?: string; boundary?: string } = {},
): Promise<StowOutcome> {
  const { body, contentType } = buildMultipart(parts, { boundary: options.boundary });
  return stowRaw(baseUrl, body, contentType, options);
}

/**
 * Keep-alive connections for STOW requests only, apart from fetch's pool for the reads: a
 * pushing modality and a reading viewer are different clients, and a connection the server
 * closes after an error answer to a read must not take the next store with it.
 */
const stowAgent = new http.Agent({ keepAlive: true, maxSockets: 256 });

/** POSTs a prepared body with the given Content-Type to the STOW-RS endpoint. */
export async function stowRaw(
  baseUrl: string,
  body: Buffer | AsyncIterable<Buffer>,
  contentType: string,
  options: { timeoutMs?: number; path?: string } = {},
): Promise<StowOutcome> {
  const t0 = Date.now();
  try {
    const url = new URL(`${baseUrl}${options.path ?? '/dicomweb/studies'}`);
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.request(url, {
        method: 'POST',
        agent: stowAgent,
        headers: {
          'Content-Type': contentType,
          Accept: 'application/dicom+json',
          ...authHeaders(baseUrl),
          ...(Buffer.isBuffer(body) ? { 'Content-Length': String(body.length) } : {}),
        },
        signal: AbortSignal.timeout(options.timeoutMs ?? 30_000),
      });
      req.once('response', resolve);
      req.once('error', reject);
      // An early answer (a refusal mid-body) ends the exchange; the rest of the body is moot.
      if (Buffer.isBuffer(body)) req.end(body);
      else pipeline(Readable.from(body), req).catch(() => undefined);
    });
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    let parsed: DicomJsonBody | null = null;
    try {
      parsed = text ? (JSON.parse(text) as DicomJsonBody) : null;
    } catch {
      parsed = null;
    }
    const headers = new Headers();
    for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(', ') : v);
    return { status: res.statusCode ?? 0, body: parsed, ms: Date.now() - t0, headers };
  } catch (err) {
    return { status: 0, body: null, ms: Date.now() - t0, error: describe(err) };
  }
}

/** Referenced SOP Sequence items of a store response: what the server says it stored. */
export function storedInstances(body: DicomJsonBody | null): Array<{ sopInstanceUID: string; retrieveUrl: string; warning?: number }> {
  const items = (body?.['00081199']?.Value ?? []) as DicomJsonBody[];
  return items.map((item) => ({
    sopInstanceUID: item['00081155']?.Value?.[0] as string,
    retrieveUrl: item['00081190']?.Value?.[0] as string,
    warning: item['00081196']?.Value?.[0] as number | undefined,
  }));
}

/** Failed SOP Sequence items of a store response, with their FailureReason. */
export function failedInstances(body: DicomJsonBody | null): Array<{ sopInstanceUID?: string; reason: number }> {
  const items = (body?.['00081198']?.Value ?? []) as DicomJsonBody[];
  return items.map((item) => ({
    sopInstanceUID: item['00081155']?.Value?.[0] as string | undefined,
    reason: item['00081197']?.Value?.[0] as number,
  }));
}

/** The ErrorComment of a DICOMweb error answer. */
export function errorComment(body: DicomJsonBody | null): string | undefined {
  return body?.['00000902']?.Value?.[0] as string | undefined;
}

export interface RetrieveOutcome extends HttpOutcome {
  /** The single part's bytes on a 200 with exactly one part. */
  bytes?: Buffer;
  parts?: number;
}

/**
 * WADO-RS Retrieve Instance (PS3.18 10.4.1) as stored: `multipart/related;
 * type="application/dicom"; transfer-syntax=*`, parsed with the server's own multipart reader.
 */
export async function retrieveInstance(
  baseUrl: string,
  ids: { study: string; series: string; instance: string },
  timeoutMs = 30_000,
): Promise<RetrieveOutcome> {
  const t0 = Date.now();
  try {
    const res = await fetchIdempotent(`${baseUrl}/dicomweb/studies/${ids.study}/series/${ids.series}/instances/${ids.instance}`, {
      headers: { Accept: 'multipart/related; type="application/dicom"; transfer-syntax=*', ...authHeaders(baseUrl) },
      signal: AbortSignal.timeout(timeoutMs),
    });
    const raw = Buffer.from(await res.arrayBuffer());
    if (res.status !== 200) return { status: res.status, ms: Date.now() - t0, headers: res.headers };
    const boundary = parseMediaType(res.headers.get('content-type') ?? '')?.params.boundary;
    if (!boundary) return { status: res.status, ms: Date.now() - t0, error: 'no boundary in the answer', headers: res.headers };
    const parts: Buffer[] = [];
    const reads: Promise<void>[] = [];
    await readMultipart(oneChunk(raw), boundary, (part) => {
      const chunks: Buffer[] = [];
      part.body.on('data', (c: Buffer) => chunks.push(c));
      reads.push(new Promise((resolve, reject) => {
        part.body.once('end', () => {
          parts.push(Buffer.concat(chunks));
          resolve();
        });
        part.body.once('error', reject);
      }));
    });
    await Promise.all(reads);
    return { status: 200, ms: Date.now() - t0, parts: parts.length, bytes: parts.length === 1 ? parts[0] : undefined, headers: res.headers };
  } catch (err) {
    return { status: 0, ms: Date.now() - t0, error: describe(err) };
  }
}

/** How often a GET was re-sent because the server closed a reused connection before answering. */
export const socketRetries = { count: 0 };

/**
 * fetch for idempotent requests: a request sent on a reused keep-alive connection that the
 * server closes before any answer is sent again (RFC 9112 9.3.1 allows it; browsers and Go's
 * transport do it), up to 3 times since a burst of such closes can doom several pooled
 * connections at once. The server's part in this (closing after an error answer to a GET
 * without `Connection: close`) is pinned by its own test in bad-input.test.ts.
 */
async function fetchIdempotent(url: string, init: RequestInit): Promise<Response> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fetch(url, init);
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause;
      if (cause?.code !== 'UND_ERR_SOCKET' || attempt > 3) throw err;
      socketRetries.count++;
    }
  }
}

async function* oneChunk(buf: Buffer): AsyncGenerator<Buffer> {
  yield buf;
}

export interface JsonOutcome extends HttpOutcome {
  json?: unknown;
}

/** GET with an Accept header, body parsed as JSON when it is JSON. */
export async function getJson(url: string, accept = 'application/dicom+json', timeoutMs = 30_000): Promise<JsonOutcome> {
  const t0 = Date.now();
  try {
    const res = await fetchIdempotent(url, { headers: { Accept: accept, ...authHeaders(url) }, signal: AbortSignal.timeout(timeoutMs) });
    const text = await res.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    return { status: res.status, ms: Date.now() - t0, json, headers: res.headers };
  } catch (err) {
    return { status: 0, ms: Date.now() - t0, error: describe(err) };
  }
}

/** QIDO-RS Search for Studies (PS3.18 10.6) with the given match keys. */
export function searchStudies(baseUrl: string, query: Record<string, string>, timeoutMs = 30_000): Promise<JsonOutcome> {
  return getJson(`${baseUrl}/dicomweb/studies?${new URLSearchParams(query)}`, 'application/dicom+json', timeoutMs);
}

export interface RawExchange {
  /** Everything the server sent before the connection closed (or the deadline). */
  response: string;
  /** The status code of the first response line, or 0. */
  status: number;
  /** Whether the server closed the connection (rather than the deadline passing). */
  closedByServer: boolean;
  ms: number;
}

/**
 * Sends raw bytes on a fresh TCP connection, then either half-closes (`end`), destroys it at
 * once (`destroy`: the client vanishes, no answer can arrive), or keeps it open (`keep`) until
 * `waitMs` passes or the server closes. For requests a real HTTP client would refuse to send,
 * such as a Content-Length of 4 GB followed by a short body.
 */
export function rawExchange(
  port: number,
  chunks: Buffer[],
  options: { after: 'end' | 'destroy' | 'keep'; waitMs: number },
): Promise<RawExchange> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const received: Buffer[] = [];
    let settled = false;
    const finish = (closedByServer: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const response = Buffer.concat(received).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(response);
      resolve({ response, status: m ? Number(m[1]) : 0, closedByServer, ms: Date.now() - t0 });
    };
    const timer = setTimeout(() => finish(false), options.waitMs);
    socket.on('data', (d: Buffer) => received.push(d));
    socket.on('error', () => finish(true));
    socket.on('close', () => finish(true));
    socket.on('connect', async () => {
      for (const c of chunks) {
        if (!socket.write(c)) await new Promise((r) => socket.once('drain', r));
      }
      if (options.after === 'end') socket.end();
      else if (options.after === 'destroy') finish(false);
    });
  });
}

/** Polls `url` until it answers `status` (default 200) or `timeoutMs` passes; returns whether it did. */
export async function waitForStatus(url: string, timeoutMs: number, status = 200): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const r = await getJson(url, 'application/json', 5000);
    if (r.status === status) return true;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return false;
}

function describe(err: unknown): string {
  const e = err as { name?: string; code?: string; message?: string; cause?: { code?: string; message?: string } };
  return [e?.name, e?.code, e?.message, e?.cause?.code, e?.cause?.message].filter(Boolean).join(': ');
}

/** Runs `work` over `items` with at most `concurrency` at a time, in order of start. */
export async function runPool<T>(items: T[], concurrency: number, work: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      await work(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}

/** One instance a client sent, with the UIDs it carries. */
export interface SentInstance {
  sopInstanceUID: string;
  studyInstanceUID: string;
  seriesInstanceUID: string;
  bytes: Buffer;
}

/** What a load of STOW requests got: every answer, and the instances the server acknowledged. */
export class WriteLedger {
  /** SOP Instance UID -> the instance the server said it stored (ReferencedSOPSequence). */
  readonly acknowledged = new Map<string, SentInstance>();
  readonly answers: Array<{ status: number; ms: number; error?: string; uids: string[]; at: number; comment?: string; retryAfter?: string | null }> = [];

  /** Sends `batch` as one STOW request and records the answer. */
  async send(baseUrl: string, batch: SentInstance[], timeoutMs = 30_000): Promise<StowOutcome> {
    const r = await stow(baseUrl, batch.map((b) => b.bytes), { timeoutMs });
    this.record(batch, r);
    return r;
  }

  record(batch: SentInstance[], r: StowOutcome): void {
    const stored = new Set(storedInstances(r.body).map((s) => s.sopInstanceUID));
    if (r.status === 200 || r.status === 202) {
      for (const b of batch) if (stored.has(b.sopInstanceUID)) this.acknowledged.set(b.sopInstanceUID, b);
    }
    this.answers.push({
      status: r.status,
      ms: r.ms,
      error: r.error,
      uids: batch.map((b) => b.sopInstanceUID),
      at: Date.now(),
      comment: errorComment(r.body),
      retryAfter: r.headers?.get('retry-after'),
    });
  }

  /** How many answers had each status (0: no answer). */
  statusCounts(): Record<number, number> {
    const counts: Record<number, number> = {};
    for (const a of this.answers) counts[a.status] = (counts[a.status] ?? 0) + 1;
    return counts;
  }

  /** SOP Instance UID -> SHA-256 of the acknowledged bytes. */
  acknowledgedShas(): Map<string, string> {
    return new Map([...this.acknowledged].map(([uid, s]) => [uid, createHash('sha256').update(s.bytes).digest('hex')]));
  }
}

/** A small synthetic CT instance (src/generate) as a SentInstance. */
export function makeInstance(options: SyntheticInstanceOptions = {}): SentInstance {
  const inst = createSyntheticInstance({ rows: 32, columns: 32, ...options });
  return {
    sopInstanceUID: inst.sopInstanceUID,
    studyInstanceUID: inst.studyInstanceUID,
    seriesInstanceUID: inst.seriesInstanceUID,
    bytes: inst.bytes,
  };
}

/**
 * Sends two requests one after the other on one keep-alive connection, the second (a GET) as
 * soon as the first answer is complete, which is what a pooling HTTP client does. `first` is a
 * path to GET or a complete raw request. Returns the first answer's status and Connection
 * header, and the second answer's status (0 when the server closed the connection instead).
 */
export function twoRequestsOneConnection(
  port: number,
  first: string | Buffer,
  secondPath: string,
  waitMs = 5000,
): Promise<{ first: number; firstConnection: string | null; second: number }> {
  const request = (p: string) => Buffer.from(`GET ${p} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/dicom+json\r\n${authLine(port)}\r\n`);
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let answer: { status: number; connection: string | null } | null = null;
    const done = (second: number) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ first: answer?.status ?? 0, firstConnection: answer?.connection ?? null, second });
    };
    const timer = setTimeout(() => done(0), waitMs);
    /** Parses one complete response (Content-Length framing) off the front of `buf`. */
    const take = (): { status: number; connection: string | null } | null => {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return null;
      const head = buf.subarray(0, end).toString('latin1');
      const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
      if (buf.length < end + 4 + length) return null;
      buf = buf.subarray(end + 4 + length);
      return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), connection: /\r\nconnection:\s*([^\r]*)/i.exec(head)?.[1] ?? null };
    };
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!answer) {
        answer = take();
        if (answer && !socket.destroyed) socket.write(request(secondPath));
      }
      if (answer) {
        const second = take();
        if (second) done(second.status);
      }
    });
    socket.on('close', () => done(0));
    socket.on('error', () => done(0));
    socket.on('connect', () => socket.write(typeof first === 'string' ? request(first) : first));
  });
}
