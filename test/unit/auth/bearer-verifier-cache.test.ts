import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { loadAuthConfig, type AuthConfig } from '../../../src/auth/auth-config';
import { createBearerVerifier } from '../../../src/auth/bearer-verifier';
import { mintLocalToken } from '../../../src/auth/local-token';
import { openKeyStore, type KeyStore } from '../../../src/auth/signing-keys';
import { tamperJwt } from '../../helpers/tokens';

/** A key store that counts key look-ups: one per signature verification, none on a cache hit. */
function counting(keys: KeyStore): KeyStore & { finds: number } {
  const wrapped = {
    finds: 0,
    current: () => keys.current(),
    find: (kid: string) => {
      wrapped.finds++;
      return keys.find(kid);
    },
    publicJwks: () => keys.publicJwks(),
    rotate: () => keys.rotate(),
    revision: () => keys.revision(),
  };
  return wrapped;
}

describe('bearer verifier cache', () => {
  let dir: string;
  let config: AuthConfig;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'il-bearer-cache-'));
    config = loadAuthConfig({ DATA_DIR: dir, AUTH_ISSUER: 'http://il.test', AUTH_CLOCK_TOLERANCE_SECONDS: '0' });
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('a second use of a token skips the signature check', async () => {
    const keys = counting(await openKeyStore(config));
    const verifier = createBearerVerifier({ keys, config });
    const t = await mintLocalToken({ role: 'researcher', projects: ['p1'] }, { config, keys });
    const first = await verifier.verify(t.accessToken);
    expect(await verifier.verify(t.accessToken)).toBe(first);
    expect(keys.finds).toBe(1);
  });

  test('a cached token still stops at its exp', async () => {
    const keys = await openKeyStore(config);
    const verifier = createBearerVerifier({ keys, config });
    // exp is whole seconds from a whole-second iat: ttl 2 leaves at least one second to use it in.
    const t = await mintLocalToken({ role: 'admin', ttlSeconds: 2 }, { config, keys });
    await verifier.verify(t.accessToken);
    await verifier.verify(t.accessToken);
    await new Promise((r) => setTimeout(r, (t.expiresAt * 1000 - Date.now()) + 50));
    await expect(verifier.verify(t.accessToken)).rejects.toThrow('token expired');
  });

  test('a tampered token sharing the cached token\'s prefix is refused', async () => {
    const keys = await openKeyStore(config);
    const verifier = createBearerVerifier({ keys, config });
    const t = await mintLocalToken({ role: 'researcher', projects: ['p1'] }, { config, keys });
    await verifier.verify(t.accessToken);
    // Same header and payload, one signature character changed (not the last: its low bits are padding).
    const at = t.accessToken.lastIndexOf('.') + 10;
    const otherSignature = t.accessToken.slice(0, at) + (t.accessToken[at] === 'A' ? 'B' : 'A') + t.accessToken.slice(at + 1);
    await expect(verifier.verify(otherSignature)).rejects.toThrow('token signature invalid');
    const [h] = t.accessToken.split('.');
    const forged = tamperJwt(t.accessToken, (c) => ({ ...c, role: 'admin' }));
    expect(forged.startsWith(`${h}.`)).toBe(true);
    await expect(verifier.verify(forged)).rejects.toThrow('token signature invalid');
    // And the good one is still good.
    expect((await verifier.verify(t.accessToken)).role).toBe('researcher');
  });

  test('a failed verification is not cached: each attempt is checked again', async () => {
    const keys = counting(await openKeyStore(config));
    const verifier = createBearerVerifier({ keys, config });
    const t = await mintLocalToken({ role: 'researcher', projects: ['p1'] }, { config, keys });
    const forged = tamperJwt(t.accessToken, (c) => ({ ...c, projects: ['p2'] }));
    await expect(verifier.verify(forged)).rejects.toThrow('token signature invalid');
    await expect(verifier.verify(forged)).rejects.toThrow('token signature invalid');
    expect(keys.finds).toBe(2);
  });

  test('a signing key removed from the key set stops its cached tokens', async () => {
    const keys = await openKeyStore(config);
    const verifier = createBearerVerifier({ keys, config });
    const t = await mintLocalToken({ role: 'admin' }, { config, keys });
    const oldKid = (await keys.current()).kid;
    await verifier.verify(t.accessToken);
    // An operator withdraws the compromised key; the next rescan (here: a rotation) sees it gone.
    for (const f of await fs.readdir(config.keyDir)) if (f.endsWith(`-${oldKid}.json`)) await fs.unlink(path.join(config.keyDir, f));
    await keys.rotate();
    await expect(verifier.verify(t.accessToken)).rejects.toThrow('token signed by an unknown key');
  });

  test('a plain rotation keeps tokens of the previous key valid (it stays published until they expire)', async () => {
    const keys = counting(await openKeyStore(config));
    const verifier = createBearerVerifier({ keys, config });
    const t = await mintLocalToken({ role: 'admin' }, { config, keys });
    await verifier.verify(t.accessToken);
    await keys.rotate();
    expect((await verifier.verify(t.accessToken)).role).toBe('admin');
    expect(keys.finds).toBe(2); // verified again after the key set changed
  });

  test('the cache is bounded: the least recently used token is verified again', async () => {
    const keys = counting(await openKeyStore(config));
    const verifier = createBearerVerifier({ keys, config, cache: { maxEntries: 2 } });
    const tokens = await Promise.all(['a', 'b', 'c'].map((s) => mintLocalToken({ role: 'admin', subject: s }, { config, keys })));
    for (const t of tokens) await verifier.verify(t.accessToken);
    expect(keys.finds).toBe(3);
    await verifier.verify(tokens[2].accessToken); // cached
    await verifier.verify(tokens[1].accessToken); // cached
    expect(keys.finds).toBe(3);
    await verifier.verify(tokens[0].accessToken); // evicted
    expect(keys.finds).toBe(4);
  });
});
