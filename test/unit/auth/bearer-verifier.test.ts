import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SignJWT } from 'jose';
import { loadAuthConfig, type AuthConfig } from '../../../src/auth/auth-config';
import { issueAccessToken } from '../../../src/auth/access-token';
import { TokenError } from '../../../src/auth/auth-errors';
import { createBearerVerifier } from '../../../src/auth/bearer-verifier';
import { mintLocalToken } from '../../../src/auth/local-token';
import { openKeyStore, type KeyStore } from '../../../src/auth/signing-keys';
import { makeClientKey, startJwksServer, tamperJwt, unsignedJwt, type JwksServer } from '../../helpers/tokens';

describe('bearer token verification', () => {
  let dir: string;
  let config: AuthConfig;
  let keys: KeyStore;
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'il-bearer-'));
    config = loadAuthConfig({ DATA_DIR: dir, AUTH_ISSUER: 'http://il.test', AUTH_CLOCK_TOLERANCE_SECONDS: '0' });
    keys = await openKeyStore(config);
  });
  afterAll(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });
  const verify = (token: string) => createBearerVerifier({ keys, config }).verify(token);

  test('a valid token yields the principal', async () => {
    const t = await mintLocalToken({ role: 'pi', projects: ['p1', 'p2'], subject: 'alice', facility: 'north' }, { config, keys });
    const p = await verify(t.accessToken);
    expect(p).toMatchObject({ subject: 'alice', role: 'pi', projects: ['p1', 'p2'], facility: 'north', tokenId: t.tokenId, source: 'local' });
    expect(p.scopes.map((s) => s.raw)).toEqual(['user/*.rs', 'user/Group.cruds']);
  });

  test('alg none is refused', async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = unsignedJwt({ iss: config.issuer, aud: config.audience, sub: 'x', role: 'admin', scope: 'user/*.cruds', projects: [], jti: 'j', iat: now, exp: now + 60 });
    await expect(verify(token)).rejects.toThrow(/unsigned tokens are not accepted/);
  });

  test('an expired token is refused', async () => {
    const key = await keys.current();
    const past = Math.floor(Date.now() / 1000) - 3600;
    const token = await new SignJWT({ role: 'admin', scope: 'user/*.cruds', projects: [] })
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'at+jwt' })
      .setIssuer(config.issuer)
      .setAudience(config.audience)
      .setSubject('x')
      .setJti('j1')
      .setIssuedAt(past)
      .setExpirationTime(past + 60)
      .sign(key.privateKey);
    await expect(verify(token)).rejects.toThrow('token expired');
  });

  test('a wrong audience is refused', async () => {
    const t = await issueAccessToken({ keys, config: { ...config, audience: 'https://elsewhere' } }, { subject: 'x', role: 'admin', scope: 'user/*.cruds', projects: [] }, 60);
    await expect(verify(t.accessToken)).rejects.toThrow('token claim "aud" invalid');
  });

  test('a foreign issuer is refused', async () => {
    const t = await issueAccessToken({ keys, config: { ...config, issuer: 'https://evil' } }, { subject: 'x', role: 'admin', scope: 'user/*.cruds', projects: [] }, 60);
    await expect(verify(t.accessToken)).rejects.toThrow('token issuer not accepted');
  });

  test('a tampered payload breaks the signature', async () => {
    const t = await mintLocalToken({ role: 'researcher', projects: ['p1'] }, { config, keys });
    const forged = tamperJwt(t.accessToken, (c) => ({ ...c, role: 'admin' }));
    await expect(verify(forged)).rejects.toThrow('token signature invalid');
  });

  test('a token signed by an unknown key is refused', async () => {
    const other = await makeClientKey('ES256');
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ role: 'admin', scope: 'user/*.cruds', projects: [] })
      .setProtectedHeader({ alg: 'ES256', kid: 'nope', typ: 'at+jwt' })
      .setIssuer(config.issuer)
      .setAudience(config.audience)
      .setSubject('x')
      .setJti('j2')
      .setIssuedAt(now)
      .setExpirationTime(now + 60)
      .sign(other.privateKey);
    await expect(verify(token)).rejects.toThrow('token signed by an unknown key');
  });

  test('verified tokens are cached, but never past their expiry', async () => {
    const verifier = createBearerVerifier({ keys, config });
    // exp is whole seconds from a whole-second iat: ttl 2 leaves at least one second to use it in.
    const t = await mintLocalToken({ role: 'admin', ttlSeconds: 2 }, { config, keys });
    const first = await verifier.verify(t.accessToken);
    expect(await verifier.verify(t.accessToken)).toBe(first);
    await new Promise((r) => setTimeout(r, t.expiresAt * 1000 - Date.now() + 50));
    await expect(verifier.verify(t.accessToken)).rejects.toThrow('token expired');
  });

  test('garbage is refused as malformed', async () => {
    await expect(verify('abc')).rejects.toBeInstanceOf(TokenError);
    await expect(verify('a.b.c')).rejects.toThrow('token malformed');
  });

  describe('external OIDC provider', () => {
    let jwks: JwksServer;
    let idpKey: Awaited<ReturnType<typeof makeClientKey>>;
    let oidcConfig: AuthConfig;
    beforeAll(async () => {
      idpKey = await makeClientKey('RS256', 'idp-1');
      jwks = await startJwksServer([idpKey.publicJwk]);
      oidcConfig = loadAuthConfig({
        DATA_DIR: dir,
        AUTH_ISSUER: 'http://il.test',
        AUTH_OIDC_ISSUER: 'https://idp.example.org/realms/lake',
        AUTH_OIDC_AUDIENCE: 'imaging-lake',
        AUTH_OIDC_JWKS_URL: jwks.url,
        AUTH_OIDC_ROLE_CLAIM: 'realm_access.roles',
        AUTH_OIDC_ROLE_MAP: '{"lake-researchers":"researcher","lake-admins":"admin"}',
        AUTH_OIDC_PROJECTS_CLAIM: 'lake_projects',
      });
    });
    afterAll(async () => {
      await jwks.close();
    });
    const oidcToken = (claims: Record<string, unknown>, aud = 'imaging-lake') =>
      new SignJWT(claims)
        .setProtectedHeader({ alg: 'RS256', kid: 'idp-1' })
        .setIssuer('https://idp.example.org/realms/lake')
        .setAudience(aud)
        .setSubject('bob')
        .setIssuedAt()
        .setExpirationTime('5m')
        .sign(idpKey.privateKey);

    test('role and projects come from the configured claims', async () => {
      const token = await oidcToken({ realm_access: { roles: ['offline_access', 'lake-researchers'] }, lake_projects: ['p1'], scope: 'openid user/ImagingStudy.rs' });
      const p = await createBearerVerifier({ keys, config: oidcConfig }).verify(token);
      expect(p).toMatchObject({ subject: 'bob', role: 'researcher', projects: ['p1'], source: 'oidc' });
      expect(p.scopes.map((s) => s.raw)).toEqual(['user/ImagingStudy.rs']);
    });

    test('a token whose groups map onto no role is refused', async () => {
      const token = await oidcToken({ realm_access: { roles: ['admin'] } }); // literal "admin" is not in the map
      await expect(createBearerVerifier({ keys, config: oidcConfig }).verify(token)).rejects.toThrow(/no role/);
    });

    test('a token for another audience is refused', async () => {
      const token = await oidcToken({ realm_access: { roles: ['lake-admins'] } }, 'other-api');
      await expect(createBearerVerifier({ keys, config: oidcConfig }).verify(token)).rejects.toThrow('token claim "aud" invalid');
    });
  });
});
