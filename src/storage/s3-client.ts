import { S3Client } from '@aws-sdk/client-s3';
import type { S3BlobStoreOptions } from './s3-blob-store';

/** Printed by the SDK on every failed streaming request; the failure itself reaches the caller as an error. */
const STREAMING_RETRY_NOTICE = 'non-retryable streaming request';

/**
 * Builds the S3 client for a blob store. Tuned to fail fast when the endpoint is gone
 * (refused: at once; silent: about 3x the response timeout), not after minutes.
 */
export function createS3Client(options: S3BlobStoreOptions): S3Client {
  const sink = options.logger ?? console;
  return new S3Client({
    region: options.region ?? 'us-east-1',
    endpoint: options.endpoint,
    forcePathStyle: options.forcePathStyle,
    // Static keys when given, else the SDK's standard credential chain.
    credentials: options.credentials,
    maxAttempts: 3,
    requestHandler: {
      connectionTimeout: 3000,
      socketTimeout: options.socketTimeoutMs ?? 30_000,
      // Lets the per-request `requestTimeout` the store passes for body-less calls reject
      // instead of only logging a warning.
      throwOnRequestTimeout: true,
    },
    // The default CRC32 trailers send aws-chunked bodies, which s3rver and some S3-compatible
    // stores save verbatim (framing included). Integrity comes from our own SHA-256 checksums.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    logger: {
      debug: () => undefined,
      info: () => undefined,
      warn: (...args: unknown[]) => {
        if (!args.some((a) => typeof a === 'string' && a.includes(STREAMING_RETRY_NOTICE))) sink.warn(...args);
      },
      // The SDK logs every failed command here (each 404 HEAD included); callers get the error itself.
      error: () => undefined,
    },
  });
}
