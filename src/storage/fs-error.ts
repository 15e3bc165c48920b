import { BlobStoreFullError, BlobStoreUnavailableError } from './blob-store';

/** Errno codes that mean "no room": STOW answers 0xA700 (Out of Resources) for these. */
const FULL_CODES = new Set(['ENOSPC', 'EDQUOT', 'EFBIG']);

/** Errno codes that mean the volume itself is gone or unusable, not that the request was wrong. */
const UNAVAILABLE_CODES = new Set(['EIO', 'EROFS', 'ENOTCONN', 'ESTALE', 'ETIMEDOUT', 'ENODEV', 'ENXIO']);

/** The errno code of a Node system error, if any. */
export function errnoCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Maps a filesystem error to the port's error types; anything else is returned unchanged. */
export function toBlobStoreError(err: unknown, doing: string): unknown {
  if (err instanceof BlobStoreFullError || err instanceof BlobStoreUnavailableError) return err;
  const code = errnoCode(err);
  if (code && FULL_CODES.has(code)) return new BlobStoreFullError(`${doing}: ${code} (storage full)`, err);
  if (code && UNAVAILABLE_CODES.has(code)) return new BlobStoreUnavailableError(`${doing}: ${code}`, err);
  return err;
}
