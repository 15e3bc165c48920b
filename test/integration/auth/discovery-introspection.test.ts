import { decodeProtectedHeader } from 'jose';
import request from 'supertest';
import { mintLocalToken } from '../../../src/auth/local-token';
import { ISSUER, startAuthTestApp, type AuthTestApp } from './auth-test-app';

describe('SMART discovery, JWKS and introspection', () => {
  let t: AuthTestApp;
  beforeAll(async () => {
    t = await startAuthTestApp();
  });
  afterAll(async () => {
    await t?.close();
  });
  const mint = (role: 'admin' | 'researcher', subject: string) => mintLocalToken({ role, projects: ['p1'], subject }, { config: t.config, keys: t.auth.keys }).then((r) => r.accessToken);

  test.each(['/fhir/.well-known/smart-configuration', '/.well-known/smart-configuration'])('%s has the SMART 2.2 fields', async (path) => {
    const res = await request(t.http).get(path);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      issuer: ISSUER,
      jwks_uri: `${ISSUER}/oauth2/jwks`,
      token_endpoint: `${ISSUER}/oauth2/token`,
      introspection_endpoint: `${ISSUER}/oauth2/introspect`,
      grant_types_supported: ['client_credentials'],
      token_endpoint_auth_methods_supported: ['private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
      response_types_supported: [],
      code_challenge_methods_supported: ['S256'],
    });
    expect(res.body.capabilities).toEqual(expect.arrayContaining(['client-confidential-asymmetric', 'permission-v2']));
    expect(res.body.scopes_supported).toEqual(expect.arrayContaining(['system/*.rs']));
  });

  test('the JWKS publishes current and previous key after a rotation; tokens of the old key still work', async () => {
    const old = await mint('admin', 'before-rotation');
    const oldKid = decodeProtectedHeader(old).kid;
    const rotated = await t.auth.keys.rotate();
    const res = await request(t.http).get('/oauth2/jwks');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/application\/jwk-set\+json/);
    const jwks = JSON.parse(res.text) as { keys: Array<Record<string, unknown>> };
    expect(jwks.keys.map((k) => k.kid)).toEqual([rotated.kid, oldKid]);
    for (const k of jwks.keys) expect(k).not.toHaveProperty('d');
    const fresh = await mint('admin', 'after-rotation');
    expect(decodeProtectedHeader(fresh).kid).toBe(rotated.kid);
    for (const token of [old, fresh]) {
      expect((await request(t.http).get('/fhir/Patient/1').set('Authorization', `Bearer ${token}`)).status).toBe(200);
    }
  });

  test('introspection needs an authenticated caller', async () => {
    const res = await request(t.http).post('/oauth2/introspect').type('form').send({ token: 'x' });
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toBe('Bearer realm="imaging-lake"');
    expect(res.body).toEqual({ error: 'invalid_request', error_description: 'introspection requires a bearer token' });
  });

  test('an admin sees an active token with its claims', async () => {
    const target = await mint('researcher', 'carol');
    const res = await request(t.http).post('/oauth2/introspect').set('Authorization', `Bearer ${await mint('admin', 'root')}`).type('form').send({ token: target });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ active: true, sub: 'carol', role: 'researcher', projects: ['p1'], iss: ISSUER, aud: ISSUER, token_type: 'Bearer', scope: 'user/*.rs user/Group.cruds' });
    expect(res.body.exp).toEqual(expect.any(Number));
  });

  test('an invalid token is inactive', async () => {
    const res = await request(t.http).post('/oauth2/introspect').set('Authorization', `Bearer ${await mint('admin', 'root')}`).type('form').send({ token: 'not.a.token' });
    expect(res.body).toEqual({ active: false });
  });

  test('a non-admin may introspect its own token but not somebody else\'s', async () => {
    const mine = await mint('researcher', 'dave');
    const other = await mint('researcher', 'erin');
    const asDave = (token: string) => request(t.http).post('/oauth2/introspect').set('Authorization', `Bearer ${mine}`).type('form').send({ token });
    expect((await asDave(mine)).body.active).toBe(true);
    expect((await asDave(other)).body).toEqual({ active: false });
  });
});
