import { BlobStoreFullError, BlobStoreUnavailableError } from './blob-store';
import { errnoCode, toBlobStoreError } from './fs-error';

/** Socket-level failures: the S3 endpoint is unreachable or dropped us, whatever the request was. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

/** Service error names that mean "no room" on S3-compatible stores (MinIO, Ceph) or a size limit. */
const FULL_NAMES = new Set(['InsufficientStorage', 'XMinioStorageFull', 'EntityTooLarge', 'QuotaExceeded']);

/** Service error names that mean the store, not the request, is the problem. */
const UNAVAILABLE_NAMES = new Set([
  'TimeoutError',
  'RequestTimeout',
  'ServiceUnavailable',
  'SlowDown',
  'InternalError',
  'NoSuchBucket',
]);

interface SdkErrorShape {
  name?: string;
  code?: string;
  message?: string;
  errors?: unknown[];
  $metadata?: { httpStatusCode?: number };
}

/** HTTP status of an SDK service error, if the request got that far. */
export function httpStatusOf(err: unknown): number | undefined {
  return (err as SdkErrorShape | null)?.$metadata?.httpStatusCode;
}

/** True for the SDK's "object absent" answers (GetObject: NoSuchKey; HeadObject: bare 404 NotFound). */
export function isNotFound(err: unknown): boolean {
  const name = (err as SdkErrorShape | null)?.name;
  if (name === 'NoSuchBucket') return false;
  return name === 'NoSuchKey' || name === 'NotFound' || httpStatusOf(err) === 404;
}

/** Maps an S3 client (or local spool) error to the port's error types; anything else is returned unchanged. */
export function toS3BlobStoreError(err: unknown, doing: string): unknown {
  if (err instanceof BlobStoreFullError || err instanceof BlobStoreUnavailableError) return err;
  const e = (err ?? {}) as SdkErrorShape;
  const status = httpStatusOf(err);
  const name = e.name ?? '';
  if (FULL_NAMES.has(name) || status === 507) {
    return new BlobStoreFullError(`${doing}: ${name || `HTTP ${status}`}`, err);
  }
  if (isNetworkError(err)) {
    return new BlobStoreUnavailableError(`${doing}: S3 unreachable (${networkCode(err)})`, err);
  }
  if (UNAVAILABLE_NAMES.has(name) || (status !== undefined && status >= 500)) {
    return new BlobStoreUnavailableError(`${doing}: ${name || `HTTP ${status}`}`, err);
  }
  // Local spool errors (ENOSPC on the staging disk) use the filesystem mapping.
  return toBlobStoreError(err, doing);
}

/** Connection refused/reset/timed out, including Node's AggregateError from trying several addresses. */
function isNetworkError(err: unknown): boolean {
  return networkCode(err) !== undefined;
}

/** The socket error code behind `err`, if it is one. */
function networkCode(err: unknown): string | undefined {
  const code = errnoCode(err);
  if (code && NETWORK_CODES.has(code)) return code;
  const e = err as SdkErrorShape | null;
  if (Array.isArray(e?.errors)) {
    for (const inner of e.errors) {
      const found = networkCode(inner);
      if (found) return found;
    }
  }
  // The SDK's retry layer re-wraps errors that fail `instanceof Error` (another realm: Jest, vm)
  // as "AWS SDK error wrapper for Error: connect ECONNREFUSED ...", keeping only the message.
  if (!code && e?.$metadata && e.$metadata.httpStatusCode === undefined && typeof e.message === 'string') {
    const m = /\b(E[A-Z_]+)\b/.exec(e.message);
    if (m && NETWORK_CODES.has(m[1])) return m[1];
  }
  return undefined;
}
