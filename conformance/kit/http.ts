import { randomBytes } from 'node:crypto';
import { CheckFailure } from './report';

/** A response read whole: the kit only moves small test instances. */
export interface KitResponse {
  status: number;
  headers: Headers;
  body: Buffer;
}

/** Plain HTTP client for the kit: a base URL, an optional bearer token, nothing else. */
export class KitHttp {
  constructor(
    readonly baseUrl: string,
    private readonly token: string | undefined,
    private readonly timeoutMs = 30_000,
  ) {}

  /** Sends one request; `anonymous` leaves the Authorization header off. */
  async request(method: string, path: string, opts: { headers?: Record<string, string>; body?: Buffer | string; anonymous?: boolean } = {}): Promise<KitResponse> {
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    if (this.token && !opts.anonymous) headers.authorization = `Bearer ${this.token}`;
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers,
        body: opts.body === undefined ? undefined : typeof opts.body === 'string' ? opts.body : new Uint8Array(opts.body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      throw new CheckFailure(`${method} ${path}: ${err instanceof Error ? err.message : String(err)}`);
    }
    return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
  }
}

/** Parses a JSON body or fails the check with what came back. */
export function parseJson(res: KitResponse, what: string): unknown {
  try {
    return JSON.parse(res.body.toString('utf8'));
  } catch {
    throw new CheckFailure(`${what}: body is not JSON (${res.body.length} bytes: ${JSON.stringify(res.body.subarray(0, 80).toString('latin1'))})`);
  }
}

/** The media type of a Content-Type header, lower-cased, without parameters. */
export function mediaType(res: KitResponse): string {
  return (res.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
}

/** Builds a multipart/related body of DICOM parts as a STOW-RS client sends it (PS3.18 8.6.1.2). */
export function buildMultipartRelated(parts: Buffer[], partType = 'application/dicom'): { body: Buffer; contentType: string } {
  const boundary = `kit-${randomBytes(8).toString('hex')}`;
  const chunks: Buffer[] = [];
  for (const part of parts) {
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Type: ${partType}\r\n\r\n`), part, Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), contentType: `multipart/related; type="${partType}"; boundary=${boundary}` };
}

/** One part of a multipart response. */
export interface MultipartPart {
  headers: Record<string, string>;
  body: Buffer;
}

/** Splits a multipart/related response (RFC 2046 5.1) into its parts, or fails the check. */
export function parseMultipart(res: KitResponse): MultipartPart[] {
  const contentType = res.headers.get('content-type') ?? '';
  const m = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  if (!/^multipart\/related/i.test(contentType) || !m) throw new CheckFailure(`expected multipart/related with a boundary, got Content-Type ${JSON.stringify(contentType)}`);
  const delimiter = Buffer.from(`--${m[1] ?? m[2]}`);
  const parts: MultipartPart[] = [];
  let pos = res.body.indexOf(delimiter);
  if (pos < 0) throw new CheckFailure('multipart body has no boundary delimiter');
  for (;;) {
    pos += delimiter.length;
    if (res.body.subarray(pos, pos + 2).toString() === '--') break;
    const headerEnd = res.body.indexOf('\r\n\r\n', pos);
    if (headerEnd < 0) throw new CheckFailure('multipart part without a header end');
    const headers: Record<string, string> = {};
    for (const line of res.body.subarray(pos, headerEnd).toString('latin1').split('\r\n')) {
      const i = line.indexOf(':');
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    const next = res.body.indexOf(Buffer.concat([Buffer.from('\r\n'), delimiter]), headerEnd + 4);
    if (next < 0) throw new CheckFailure('multipart body is not closed');
    parts.push({ headers, body: res.body.subarray(headerEnd + 4, next) });
    pos = next + 2;
  }
  return parts;
}

/** A DICOM JSON data set (PS3.18 F.2). */
export type DicomJson = Record<string, { vr?: string; Value?: unknown[]; BulkDataURI?: string; InlineBinary?: string } | undefined>;

/** The first value of `tag` in a DICOM JSON data set, as a string (PN as its Alphabetic group). */
export function firstValue(ds: DicomJson, tag: string): string | undefined {
  const v = ds[tag]?.Value?.[0];
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'object' && 'Alphabetic' in (v as object)) return String((v as { Alphabetic: unknown }).Alphabetic);
  return String(v);
}
