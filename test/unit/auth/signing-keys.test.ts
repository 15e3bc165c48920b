import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { decodeProtectedHeader } from 'jose';
import { loadAuthConfig, type AuthConfig } from '../../../src/auth/auth-config';
import { verifyLocalAccessToken } from '../../../src/auth/access-token';
import { mintLocalToken } from '../../../src/auth/local-token';
import { openKeyStore } from '../../../src/auth/signing-keys';

describe('signing keys under DATA_DIR', () => {
  let dir: string;
  let config: AuthConfig;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'il-keys-'));
    config = loadAuthConfig({ DATA_DIR: dir, AUTH_ISSUER: 'http://il.test' });
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('the first open creates one private key file readable by the owner only', async () => {
    const keys = await openKeyStore(config);
    const files = (await fs.readdir(config.keyDir)).filter((f) => f.endsWith('.json'));
    expect(files).toHaveLength(1);
    expect((await fs.stat(path.join(config.keyDir, files[0]))).mode & 0o777).toBe(0o600);
    const jwks = await keys.publicJwks();
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).not.toHaveProperty('d');
    expect(jwks.keys[0]).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' });
  });

  test('a second process (the CLI) mints with the same key the server verifies with', async () => {
    const server = await openKeyStore(config);
    const minted = await mintLocalToken({ role: 'researcher', projects: ['p1'] }, { config }); // opens its own store
    const principal = await verifyLocalAccessToken({ keys: server, config }, minted.accessToken);
    expect(principal).toMatchObject({ role: 'researcher', projects: ['p1'], subject: 'cli:researcher' });
    expect(principal.scopeText).toBe('user/*.rs user/Group.cruds');
  });

  test('after rotation the JWKS publishes current and previous keys, and old tokens still verify', async () => {
    const keys = await openKeyStore(config);
    const before = await mintLocalToken({ role: 'admin' }, { config, keys });
    const oldKid = decodeProtectedHeader(before.accessToken).kid;
    const rotated = await keys.rotate();
    expect(rotated.kid).not.toBe(oldKid);
    const published = (await keys.publicJwks()).keys.map((k) => k.kid);
    expect(published).toEqual([rotated.kid, oldKid]);
    const after = await mintLocalToken({ role: 'admin' }, { config, keys });
    expect(decodeProtectedHeader(after.accessToken).kid).toBe(rotated.kid);
    await expect(verifyLocalAccessToken({ keys, config }, before.accessToken)).resolves.toMatchObject({ role: 'admin' });
  });

  test('a server picks up a key rotated by another process when it meets its kid', async () => {
    const server = await openKeyStore(config);
    const cli = await openKeyStore(config);
    await cli.rotate();
    await new Promise((r) => setTimeout(r, 2100)); // past the miss-rescan throttle
    const token = await mintLocalToken({ role: 'pi', projects: ['p1'] }, { config, keys: cli });
    await expect(verifyLocalAccessToken({ keys: server, config }, token.accessToken)).resolves.toMatchObject({ role: 'pi' });
  });

  test('keys retired longer than the longest token lifetime are deleted', async () => {
    const short = { ...config, localTokenMaxTtlSeconds: 0, clockToleranceSeconds: 0 };
    const keys = await openKeyStore(short);
    const first = (await keys.publicJwks()).keys[0].kid;
    await keys.rotate();
    // Pretend time passed: the first key was made 4 minutes ago, its successor 2 (grace here is 60 s).
    const files = (await fs.readdir(config.keyDir)).filter((f) => f.endsWith('.json')).sort();
    for (const [i, name] of files.entries()) {
      const content = JSON.parse(await fs.readFile(path.join(config.keyDir, name), 'utf8'));
      content.createdAt = new Date(Date.now() - (files.length - i) * 120_000).toISOString();
      await fs.writeFile(path.join(config.keyDir, name), JSON.stringify(content));
    }
    const reopened = await openKeyStore(short);
    const kids = (await reopened.publicJwks()).keys.map((k) => k.kid);
    expect(kids).not.toContain(first);
    expect(kids).toHaveLength(1);
  });

  test('RS256 keys work too', async () => {
    const rs = { ...config, signingAlg: 'RS256' as const };
    const keys = await openKeyStore(rs);
    const t = await mintLocalToken({ role: 'admin' }, { config: rs, keys });
    expect(decodeProtectedHeader(t.accessToken).alg).toBe('RS256');
    await expect(verifyLocalAccessToken({ keys, config: rs }, t.accessToken)).resolves.toMatchObject({ role: 'admin' });
  });

  test('mintLocalToken narrows scopes to the role and refuses what the role cannot hold', async () => {
    const keys = await openKeyStore(config);
    const t = await mintLocalToken({ role: 'researcher', projects: ['p1'], scope: 'user/ImagingStudy.rs' }, { config, keys });
    expect(t.scope).toBe('user/ImagingStudy.rs');
    await expect(mintLocalToken({ role: 'researcher', scope: 'user/ImagingStudy.d' }, { config, keys })).rejects.toThrow(/may hold none/);
    await expect(mintLocalToken({ role: 'admin', ttlSeconds: 10 * 86400 }, { config, keys })).rejects.toThrow(/ttl/);
  });
});
