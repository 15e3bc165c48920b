import { randomUUID } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import request from 'supertest';
import { registerClient, setClientEnabled } from '../../../src/auth/client-registry';
import { createProject } from '../../../src/auth/project-store';
import { makeClientAssertion, makeClientKey, startJwksServer, tokenForm, type ClientKey, type JwksServer } from '../../helpers/tokens';
import { ISSUER, startAuthTestApp, TOKEN_ENDPOINT, type AuthTestApp } from './auth-test-app';

describe('POST /oauth2/token (SMART Backend Services)', () => {
  let t: AuthTestApp;
  let rsKey: ClientKey;
  let esKey: ClientKey;
  let jwksKey: ClientKey;
  let jwksServer: JwksServer;
  const rsClient = `rs-${randomUUID().slice(0, 8)}`;
  const esClient = `es-${randomUUID().slice(0, 8)}`;
  const urlClient = `url-${randomUUID().slice(0, 8)}`;

  beforeAll(async () => {
    t = await startAuthTestApp();
    const knex = t.base.app.db.knex;
    await createProject(knex, { id: 'glaucoma', name: 'Glaucoma cohort', facility: 'north' });
    rsKey = await makeClientKey('RS384');
    esKey = await makeClientKey('ES384');
    jwksKey = await makeClientKey('ES384');
    jwksServer = await startJwksServer([jwksKey.publicJwk]);
    await registerClient(knex, { clientId: rsClient, name: 'RS client', jwks: { keys: [rsKey.publicJwk] }, scopes: ['system/*.rs'], role: 'researcher', projects: ['glaucoma'] });
    await registerClient(knex, { clientId: esClient, name: 'ES client', jwks: { keys: [esKey.publicJwk] }, scopes: ['system/ImagingStudy.rs', 'system/Patient.r'], role: 'data-manager', projects: ['glaucoma'], facility: 'north' });
    await registerClient(knex, { clientId: urlClient, name: 'JWKS URL client', jwksUri: jwksServer.url, scopes: ['system/*.cruds'], role: 'admin' });
  });
  afterAll(async () => {
    await jwksServer?.close();
    await t?.close();
  });

  const post = (form: Record<string, string>) => request(t.http).post('/oauth2/token').type('form').send(form);

  test('an RS384 assertion gets a bearer token with our claims', async () => {
    const assertion = await makeClientAssertion({ clientId: rsClient, audience: TOKEN_ENDPOINT, key: rsKey });
    const res = await post(tokenForm(assertion, 'system/ImagingStudy.rs'));
    expect(res.status).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.body).toEqual({ access_token: expect.any(String), token_type: 'bearer', expires_in: 600, scope: 'system/ImagingStudy.rs' });
    const claims = decodeJwt(res.body.access_token);
    expect(claims).toMatchObject({ iss: ISSUER, aud: ISSUER, sub: rsClient, client_id: rsClient, scope: 'system/ImagingStudy.rs', role: 'researcher', projects: ['glaucoma'] });
    expect(claims.exp! - claims.iat!).toBe(600);
    expect(claims.jti).toEqual(expect.any(String));
    expect(decodeProtectedHeader(res.body.access_token)).toMatchObject({ alg: 'ES256', typ: 'at+jwt' });
  });

  test('an ES384 assertion works too, and the grant is narrowed to the registered scopes', async () => {
    const assertion = await makeClientAssertion({ clientId: esClient, audience: TOKEN_ENDPOINT, key: esKey });
    const res = await post(tokenForm(assertion, 'system/*.rs'));
    expect(res.status).toBe(200);
    expect(res.body.scope).toBe('system/ImagingStudy.rs system/Patient.r');
    expect(decodeJwt(res.body.access_token)).toMatchObject({ role: 'data-manager', facility: 'north' });
  });

  test('the token is accepted by the guard', async () => {
    const assertion = await makeClientAssertion({ clientId: urlClient, audience: TOKEN_ENDPOINT, key: jwksKey });
    const token = (await post(tokenForm(assertion, 'system/*.rs'))).body.access_token as string;
    const res = await request(t.http).get('/dicomweb/studies').set('Authorization', `Bearer ${token}`);
    expect(res.status).not.toBe(401);
    expect(res.status).not.toBe(403);
  });

  test('a client whose keys are at a JWKS URL: keys are fetched over HTTP and cached', async () => {
    const before = jwksServer.hits();
    for (let i = 0; i < 3; i++) {
      const assertion = await makeClientAssertion({ clientId: urlClient, audience: TOKEN_ENDPOINT, key: jwksKey });
      expect((await post(tokenForm(assertion, 'system/*.cruds'))).status).toBe(200);
    }
    expect(jwksServer.hits() - before).toBeLessThanOrEqual(1);
  });

  test('a replayed jti is refused', async () => {
    const jti = randomUUID();
    const first = await makeClientAssertion({ clientId: rsClient, audience: TOKEN_ENDPOINT, key: rsKey, jti });
    expect((await post(tokenForm(first, 'system/*.rs'))).status).toBe(200);
    const again = await makeClientAssertion({ clientId: rsClient, audience: TOKEN_ENDPOINT, key: rsKey, jti });
    const res = await post(tokenForm(again, 'system/*.rs'));
    expect(res.status).toBe(401);
    expect(res.body).toEqual({ error: 'invalid_client', error_description: 'client_assertion jti already used' });
  });

  test('the replay record is durable: it is a row in auth_replay_guard', async () => {
    const jti = randomUUID();
    const a = await makeClientAssertion({ clientId: rsClient, audience: TOKEN_ENDPOINT, key: rsKey, jti });
    await post(tokenForm(a, 'system/*.rs'));
    const row = await t.base.app.db.knex('auth_replay_guard').where({ issuer: `client:${rsClient}`, jti }).first();
    expect(row).toBeDefined();
  });

  test('an exp more than five minutes ahead is refused', async () => {
    const assertion = await makeClientAssertion({ clientId: rsClient, audience: TOKEN_ENDPOINT, key: rsKey, expiresIn: 600 });
    const res = await post(tokenForm(assertion, 'system/*.rs'));
    expect(res.status).toBe(401);
    expect(res.body).toEqual({ error: 'invalid_client', error_description: 'client_assertion exp is more than five minutes ahead' });
  });

  test('an expired assertion is refused', async () => {
    const assertion = await makeClientAssertion({ clientId: rsClient, audience: TOKEN_ENDPOINT, key: rsKey, expiresIn: -120 });
    const res = await post(tokenForm(assertion, 'system/*.rs'));
    expect(res.status).toBe(401);
    expect(res.body.error).toBe('invalid_client');
    expect(res.body.error_description).toMatch(/expired/);
  });

  test('an unknown client is refused', async () => {
    const assertion = await makeClientAssertion({ clientId: 'nobody', audience: TOKEN_ENDPOINT, key: rsKey });
    const res = await post(tokenForm(assertion, 'system/*.rs'));
    expect(res.status).toBe(401);
    expect(res.body).toEqual({ error: 'invalid_client', error_description: 'unknown client' });
  });

  test('a bad signature (another key with the registered kid) is refused', async () => {
    const impostor = { ...(await makeClientKey('RS384')), kid: rsKey.kid };
    const assertion = await makeClientAssertion({ clientId: rsClient, audience: TOKEN_ENDPOINT, key: impostor });
    const res = await post(tokenForm(assertion, 'system/*.rs'));
    expect(res.status).toBe(401);
    expect(res.body).toEqual({ error: 'invalid_client', error_description: 'client_assertion rejected: signature invalid' });
  });

  test('an assertion for another audience is refused', async () => {
    const assertion = await makeClientAssertion({ clientId: rsClient, audience: 'https://other.example.org/token', key: rsKey });
    const res = await post(tokenForm(assertion, 'system/*.rs'));
    expect(res.status).toBe(401);
    expect(res.body.error_description).toMatch(/"aud"/);
  });

  test('iss and sub must both be the client id', async () => {
    const assertion = await makeClientAssertion({ clientId: rsClient, audience: TOKEN_ENDPOINT, key: rsKey, subject: 'someone-else' });
    const res = await post(tokenForm(assertion, 'system/*.rs'));
    expect(res.status).toBe(401);
    expect(res.body.error_description).toBe('client_assertion iss and sub must both be the client_id');
  });

  test('RS256 assertions are refused (SMART: RS384 or ES384)', async () => {
    const rs256 = await makeClientKey('RS256');
    const assertion = await makeClientAssertion({ clientId: rsClient, audience: TOKEN_ENDPOINT, key: rs256 });
    const res = await post(tokenForm(assertion, 'system/*.rs'));
    expect(res.status).toBe(401);
    expect(res.body.error_description).toBe('client_assertion must be signed with RS384 or ES384');
  });

  test('a scope the client may not hold: invalid_scope', async () => {
    const assertion = await makeClientAssertion({ clientId: rsClient, audience: TOKEN_ENDPOINT, key: rsKey });
    const res = await post(tokenForm(assertion, 'system/Patient.cud'));
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ error: 'invalid_scope', error_description: 'none of the requested scopes is allowed for this client' });
  });

  test('another grant type: unsupported_grant_type', async () => {
    const res = await post({ grant_type: 'authorization_code', code: 'x' });
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ error: 'unsupported_grant_type', error_description: 'only client_credentials is supported' });
  });

  test('no client assertion: invalid_client', async () => {
    const res = await post({ grant_type: 'client_credentials', scope: 'system/*.rs' });
    expect(res.status).toBe(401);
    expect(res.body.error).toBe('invalid_client');
  });

  test('a disabled client: invalid_grant', async () => {
    const key = await makeClientKey('ES384');
    const id = `off-${randomUUID().slice(0, 8)}`;
    await registerClient(t.base.app.db.knex, { clientId: id, name: 'Disabled', jwks: { keys: [key.publicJwk] }, scopes: ['system/*.rs'], role: 'researcher' });
    await setClientEnabled(t.base.app.db.knex, id, false);
    const assertion = await makeClientAssertion({ clientId: id, audience: TOKEN_ENDPOINT, key });
    const res = await post(tokenForm(assertion, 'system/*.rs'));
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ error: 'invalid_grant', error_description: 'the client registration is disabled' });
  });

  test('registerClient refuses private keys, bad scopes and plain-http JWKS URLs', async () => {
    const knex = t.base.app.db.knex;
    const priv = { ...rsKey.publicJwk, d: 'secret' };
    await expect(registerClient(knex, { name: 'x', jwks: { keys: [priv] }, scopes: ['system/*.rs'], role: 'admin' })).rejects.toThrow(/public keys only/);
    await expect(registerClient(knex, { name: 'x', jwks: { keys: [rsKey.publicJwk] }, scopes: ['system/*.bogus'], role: 'admin' })).rejects.toThrow(/not a SMART/);
    await expect(registerClient(knex, { name: 'x', jwksUri: 'http://example.org/jwks', scopes: ['system/*.rs'], role: 'admin' })).rejects.toThrow(/https/);
    await expect(registerClient(knex, { name: 'x', jwks: { keys: [rsKey.publicJwk] }, scopes: ['system/*.rs'], role: 'admin', projects: ['nope'] })).rejects.toThrow(/unknown project/);
  });
});
