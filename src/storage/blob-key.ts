/**
 * Blob keys are the SHA-256 of the content as 64 lowercase hex digits. Both backends turn keys
 * into paths or object names, so nothing else may pass: a key like `../../etc/passwd` must never
 * reach `path.join` or an S3 request.
 */

const BLOB_KEY = /^[0-9a-f]{64}$/;

/** True when `key` has the shape of a blob key (SHA-256, lowercase hex). */
export function isBlobKey(key: unknown): key is string {
  return typeof key === 'string' && BLOB_KEY.test(key);
}

/** Throws a TypeError unless `key` is a well-formed blob key (a caller bug, not a missing blob). */
export function assertBlobKey(key: unknown): asserts key is string {
  if (!isBlobKey(key)) {
    throw new TypeError(`invalid blob key ${JSON.stringify(String(key)).slice(0, 80)}: expected 64 lowercase hex digits`);
  }
}

/** Throws a RangeError unless [start, end] is a valid inclusive byte range. */
export function assertByteRange(start: number, end: number): void {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
    throw new RangeError(`invalid byte range [${start}, ${end}]`);
  }
}
