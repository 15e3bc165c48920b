/**
 * The verified-token cache: a viewer sends the same bearer token with hundreds of requests, and
 * a signature check (ES256/RS256, ~150-300 µs) dwarfs the rest of the guard (a few µs). Only
 * tokens that passed verification go in; each entry lives at most `maxAgeMs` and never past the
 * token's own `exp`; the cache holds at most `maxEntries` (least recently used out first). An
 * entry is tied to the key-set revision it was verified under: when the signing keys (or an
 * OIDC provider's JWKS) change, entries from before the change are verified again.
 */
import type { Principal } from './principal';

/** Options of the cache; `now` is injectable for tests (milliseconds since the epoch). */
export interface TokenCacheOptions {
  maxEntries?: number;
  maxAgeMs?: number;
  now?: () => number;
}

interface Entry {
  principal: Principal;
  /** Epoch ms after which the entry is dead (min of the cache's max age and the token's exp). */
  until: number;
  /** Opaque revision of the key set that verified the token. */
  revision: unknown;
}

/** A bounded LRU map of token string -> verified principal. */
export interface TokenCache {
  /**
   * The principal of a cached token still within its lifetime whose key set has not changed
   * since (`currentRevision` answers the revision now in force for that principal's issuer).
   */
  get(token: string, currentRevision: (principal: Principal) => unknown): Principal | undefined;
  /** Remembers a successfully verified token (callers never pass a token that failed). */
  set(token: string, principal: Principal, revision: unknown): void;
  clear(): void;
  readonly size: number;
}

export const TOKEN_CACHE_DEFAULTS = { maxEntries: 10_000, maxAgeMs: 60_000 } as const;

/** Creates an empty verified-token cache. */
export function createTokenCache(options: TokenCacheOptions = {}): TokenCache {
  const maxEntries = options.maxEntries ?? TOKEN_CACHE_DEFAULTS.maxEntries;
  const maxAgeMs = options.maxAgeMs ?? TOKEN_CACHE_DEFAULTS.maxAgeMs;
  const now = options.now ?? Date.now;
  if (!Number.isInteger(maxEntries) || maxEntries < 1) throw new Error('token cache maxEntries must be a positive integer');
  // A Map iterates in insertion order: re-inserting on a hit keeps the least recently used first.
  const entries = new Map<string, Entry>();
  return {
    get(token, currentRevision) {
      const hit = entries.get(token);
      if (!hit) return undefined;
      if (now() >= hit.until || currentRevision(hit.principal) !== hit.revision) {
        entries.delete(token);
        return undefined;
      }
      entries.delete(token);
      entries.set(token, hit);
      return hit.principal;
    },
    set(token, principal, revision) {
      const until = Math.min(now() + maxAgeMs, principal.expiresAt * 1000);
      if (!(until > now())) return; // already at or past exp: nothing to remember
      entries.delete(token);
      while (entries.size >= maxEntries) entries.delete(entries.keys().next().value as string);
      entries.set(token, { principal, until, revision });
    },
    clear() {
      entries.clear();
    },
    get size() {
      return entries.size;
    },
  };
}
