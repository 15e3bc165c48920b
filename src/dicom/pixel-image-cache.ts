/**
 * An in-memory LRU of encoded rendered images (thumbnails), bounded by total bytes. Keys are
 * content addresses: SHA-256 of (instance blob key, frame number, media type, rendering
 * parameters). A blob key names immutable bytes, so an entry can never go stale: a re-stored
 * instance gets a new blob key and thus new keys, and old entries simply age out.
 *
 * Why memory and not files under DATA_DIR: thumbnails are small (a few KiB), cheap to redo
 * (one frame decode), and a per-process cache needs no cleanup or locking across processes.
 */
import { createHash } from 'node:crypto';

/** Counters a test or a metrics endpoint can read. */
export interface ImageCacheStats {
  hits: number;
  misses: number;
  evictions: number;
  entries: number;
  bytes: number;
  maxBytes: number;
}

export interface RenderedImageCache {
  get(key: string): { body: Buffer; mediaType: string } | undefined;
  set(key: string, value: { body: Buffer; mediaType: string }): void;
  stats(): ImageCacheStats;
  clear(): void;
}

/** The default cap: 64 MiB, some ten thousand thumbnails. */
export const DEFAULT_IMAGE_CACHE_BYTES = 64 * 1024 * 1024;

/** Creates an LRU image cache holding at most `maxBytes` of image bytes (entries larger than a quarter of it are not kept). */
export function createRenderedImageCache(options: { maxBytes?: number } = {}): RenderedImageCache {
  const maxBytes = options.maxBytes ?? DEFAULT_IMAGE_CACHE_BYTES;
  const entries = new Map<string, { body: Buffer; mediaType: string }>();
  const counters = { hits: 0, misses: 0, evictions: 0, bytes: 0 };
  return {
    get(key) {
      const hit = entries.get(key);
      if (!hit) {
        counters.misses++;
        return undefined;
      }
      counters.hits++;
      // Map keeps insertion order: re-inserting makes this the most recently used entry.
      entries.delete(key);
      entries.set(key, hit);
      return hit;
    },
    set(key, value) {
      if (value.body.length > maxBytes / 4) return;
      const old = entries.get(key);
      if (old) {
        counters.bytes -= old.body.length;
        entries.delete(key);
      }
      entries.set(key, value);
      counters.bytes += value.body.length;
      for (const [k, v] of entries) {
        if (counters.bytes <= maxBytes) break;
        entries.delete(k);
        counters.bytes -= v.body.length;
        counters.evictions++;
      }
    },
    stats() {
      return { ...counters, entries: entries.size, maxBytes };
    },
    clear() {
      entries.clear();
      counters.bytes = 0;
    },
  };
}

/** The content-addressed key of a rendering: blob key + frame + media type + normalized parameters. */
export function renderedImageKey(parts: { blobKey: string; frameNumber: number; mediaType: string; params: unknown }): string {
  return createHash('sha256')
    .update(JSON.stringify([parts.blobKey, parts.frameNumber, parts.mediaType, parts.params]))
    .digest('hex');
}
