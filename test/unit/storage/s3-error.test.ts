import { BlobStoreFullError, BlobStoreUnavailableError } from '../../../src/storage/blob-store';
import { isNotFound, toS3BlobStoreError } from '../../../src/storage/s3-error';

function sdkError(name: string, status?: number, extra: Record<string, unknown> = {}) {
  return Object.assign(new Error(name), { name, $metadata: { httpStatusCode: status }, ...extra });
}

describe('S3 error mapping', () => {
  test.each([
    ['ECONNREFUSED', Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' })],
    ['ECONNRESET', Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })],
    ['socket timeout', sdkError('TimeoutError')],
    ['503 SlowDown', sdkError('SlowDown', 503)],
    ['500', sdkError('InternalError', 500)],
    ['missing bucket', sdkError('NoSuchBucket', 404)],
    [
      'happy-eyeballs AggregateError',
      Object.assign(new AggregateError([Object.assign(new Error('x'), { code: 'ECONNREFUSED' })], 'all failed'), {}),
    ],
    [
      'SDK wrapper of a cross-realm error',
      Object.assign(new Error('AWS SDK error wrapper for Error: connect ECONNREFUSED 127.0.0.1:1'), { $metadata: { attempts: 3 } }),
    ],
  ])('%s -> BlobStoreUnavailableError', (_label, err) => {
    const mapped = toS3BlobStoreError(err, 'reading');
    expect(mapped).toBeInstanceOf(BlobStoreUnavailableError);
    expect((mapped as BlobStoreUnavailableError).cause).toBe(err);
  });

  test.each([
    ['507', sdkError('InsufficientStorage', 507)],
    ['MinIO full', sdkError('XMinioStorageFull', 500)],
    ['local spool ENOSPC', Object.assign(new Error('no space'), { code: 'ENOSPC' })],
  ])('%s -> BlobStoreFullError', (_label, err) => {
    expect(toS3BlobStoreError(err, 'uploading')).toBeInstanceOf(BlobStoreFullError);
  });

  test('a client error such as AccessDenied passes through unchanged', () => {
    const err = sdkError('AccessDenied', 403);
    expect(toS3BlobStoreError(err, 'x')).toBe(err);
  });

  test('NoSuchKey and a bare 404 are "not found"; a missing bucket is not', () => {
    expect(isNotFound(sdkError('NoSuchKey', 404))).toBe(true);
    expect(isNotFound(sdkError('NotFound', 404))).toBe(true);
    expect(isNotFound(sdkError('NoSuchBucket', 404))).toBe(false);
    expect(isNotFound(sdkError('AccessDenied', 403))).toBe(false);
  });
});
