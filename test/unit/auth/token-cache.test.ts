import type { Principal } from '../../../src/auth/principal';
import { createTokenCache } from '../../../src/auth/token-cache';

const T0 = 1_800_000_000_000;

function principal(expiresAtMs: number, subject = 'alice'): Principal {
  return { subject, role: 'researcher', scopes: [], scopeText: '', projects: ['p1'], issuer: 'http://il.test', source: 'local', expiresAt: Math.floor(expiresAtMs / 1000) };
}

describe('verified-token cache', () => {
  let now = T0;
  const clock = () => now;
  const same = () => 1;
  beforeEach(() => {
    now = T0;
  });

  test('a cached token is answered until its exp and not a millisecond after', () => {
    const cache = createTokenCache({ now: clock, maxAgeMs: 60_000 });
    const p = principal(T0 + 5_000);
    cache.set('tok', p, 1);
    now = T0 + 4_999;
    expect(cache.get('tok', same)).toBe(p);
    now = T0 + 5_000;
    expect(cache.get('tok', same)).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  test('an entry lives at most maxAgeMs even when the token lives longer', () => {
    const cache = createTokenCache({ now: clock, maxAgeMs: 1_000 });
    cache.set('tok', principal(T0 + 3_600_000), 1);
    now = T0 + 999;
    expect(cache.get('tok', same)).toBeDefined();
    now = T0 + 1_000;
    expect(cache.get('tok', same)).toBeUndefined();
  });

  test('a token already past its exp is not remembered', () => {
    const cache = createTokenCache({ now: clock });
    cache.set('tok', principal(T0 - 1_000), 1);
    expect(cache.size).toBe(0);
    expect(cache.get('tok', same)).toBeUndefined();
  });

  test('an entry verified under another key-set revision is dropped', () => {
    const cache = createTokenCache({ now: clock });
    cache.set('tok', principal(T0 + 60_000), 1);
    expect(cache.get('tok', () => 2)).toBeUndefined();
    // Gone for good: going back to the old revision does not revive it.
    expect(cache.get('tok', same)).toBeUndefined();
  });

  test('only the exact token string hits', () => {
    const cache = createTokenCache({ now: clock });
    cache.set('aaa.bbb.ccc', principal(T0 + 60_000), 1);
    expect(cache.get('aaa.bbb.ccd', same)).toBeUndefined();
    expect(cache.get('aaa.bbb.cc', same)).toBeUndefined();
    expect(cache.get('aaa.bbb.ccc', same)).toBeDefined();
  });

  test('the cache is bounded and evicts the least recently used token', () => {
    const cache = createTokenCache({ now: clock, maxEntries: 3 });
    for (const t of ['a', 'b', 'c']) cache.set(t, principal(T0 + 60_000, t), 1);
    expect(cache.get('a', same)?.subject).toBe('a'); // a is now the most recent
    cache.set('d', principal(T0 + 60_000, 'd'), 1);
    expect(cache.size).toBe(3);
    expect(cache.get('b', same)).toBeUndefined();
    expect(['a', 'c', 'd'].map((t) => cache.get(t, same)?.subject)).toEqual(['a', 'c', 'd']);
    for (let i = 0; i < 100; i++) cache.set(`x${i}`, principal(T0 + 60_000), 1);
    expect(cache.size).toBe(3);
  });

  test('a bad bound is refused at construction', () => {
    expect(() => createTokenCache({ maxEntries: 0 })).toThrow(/maxEntries/);
  });
});
