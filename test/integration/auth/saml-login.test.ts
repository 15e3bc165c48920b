import { decodeJwt } from 'jose';
import request from 'supertest';
import { createTestIdp, type SamlResponseOptions, type TestIdp } from '../../helpers/saml-idp';
import { ISSUER, startAuthTestApp, type AuthTestApp } from './auth-test-app';

const SP_ENTITY = `${ISSUER}/auth/saml/metadata`;
const ACS = `${ISSUER}/auth/saml/callback`;

describe('SAML 2.0 browser sign-in', () => {
  let t: AuthTestApp;
  let idp: TestIdp;
  beforeAll(async () => {
    idp = await createTestIdp();
    t = await startAuthTestApp({
      AUTH_SAML_ENTRY_POINT: idp.ssoUrl,
      AUTH_SAML_IDP_CERT: idp.certPem,
      AUTH_SAML_IDP_ISSUER: idp.entityId,
      AUTH_SAML_ROLE_MAP: JSON.stringify({ 'lake-admins': 'admin', 'radiology-research': 'researcher', 'glaucoma-pi': 'pi' }),
      AUTH_SAML_PROJECT_GROUP_PREFIX: 'project:',
    });
  });
  afterAll(async () => {
    await t?.close();
  });

  const valid = (o: Partial<SamlResponseOptions> = {}): SamlResponseOptions => ({
    nameId: 'alice@example.org',
    audience: SP_ENTITY,
    recipient: ACS,
    groups: ['radiology-research', 'project:glaucoma'],
    projects: ['amd'],
    displayName: 'Alice Example',
    ...o,
  });
  const post = (samlResponse: string, relayState?: string) =>
    request(t.http).post('/auth/saml/callback').type('form').send({ SAMLResponse: samlResponse, ...(relayState ? { RelayState: relayState } : {}) });
  const cookieToken = (res: request.Response) => {
    const cookies = ([] as string[]).concat(res.headers['set-cookie'] ?? []);
    const c = cookies.find((x) => x.startsWith('il_access_token='));
    return c?.split(';')[0].slice('il_access_token='.length);
  };

  test('login redirects the browser to the IdP with an AuthnRequest', async () => {
    const res = await request(t.http).get('/auth/saml/login?RelayState=%2Fviewer');
    expect(res.status).toBe(302);
    const location = new URL(res.headers.location);
    expect(location.origin + location.pathname).toBe(idp.ssoUrl);
    expect(location.searchParams.get('SAMLRequest')).toEqual(expect.any(String));
    expect(location.searchParams.get('RelayState')).toBe('/viewer');
  });

  test('SP metadata is published', async () => {
    const res = await request(t.http).get('/auth/saml/metadata');
    expect(res.status).toBe(200);
    expect(res.text).toContain(`entityID="${SP_ENTITY}"`);
    expect(res.text).toContain(ACS);
  });

  test('a good assertion signs the user in: groups map to a role, projects from attribute and group prefix, token in an HttpOnly cookie', async () => {
    const res = await post(idp.buildResponse(valid()), '/viewer/studies');
    expect(res.status).toBe(303);
    expect(res.headers.location).toBe('/viewer/studies');
    const setCookie = ([] as string[]).concat(res.headers['set-cookie']).join('\n');
    expect(setCookie).toMatch(/HttpOnly/);
    expect(setCookie).toMatch(/SameSite=Lax/);
    const token = cookieToken(res)!;
    expect(decodeJwt(token)).toMatchObject({ sub: 'alice@example.org', role: 'researcher', name: 'Alice Example', iss: ISSUER });
    expect((decodeJwt(token).projects as string[]).sort()).toEqual(['amd', 'glaucoma']);
  });

  test('the cookie authenticates reads, never writes', async () => {
    const token = cookieToken(await post(idp.buildResponse(valid())))!;
    const read = await request(t.http).get('/fhir/Patient/1').set('Cookie', `il_access_token=${token}`);
    expect(read.status).toBe(200);
    const write = await request(t.http).post('/fhir/Patient').set('Cookie', `il_access_token=${token}`).send({});
    expect(write.status).toBe(401);
  });

  test('the most privileged mapped group wins', async () => {
    const res = await post(idp.buildResponse(valid({ groups: ['radiology-research', 'lake-admins'] })));
    expect(decodeJwt(cookieToken(res)!).role).toBe('admin');
  });

  test('a tampered assertion is refused', async () => {
    const response = idp.buildResponse(valid({ tamper: (xml) => xml.replace('alice@example.org', 'mallory@example.org') }));
    const res = await post(response);
    expect(res.status).toBe(401);
    expect(res.body.error).toBe('access_denied');
    expect(res.body.error_description).toMatch(/signature/i);
    expect(res.headers['set-cookie']).toBeUndefined();
  });

  test('an assertion signed by another key is refused', async () => {
    const other = await createTestIdp(idp.entityId);
    const res = await post(idp.buildResponse(valid({ signingKeyPem: other.privateKeyPem })));
    expect(res.status).toBe(401);
    expect(res.body.error_description).toMatch(/signature/i);
  });

  test('an unsigned assertion is refused', async () => {
    const res = await post(idp.buildResponse(valid({ signAssertion: false })));
    expect(res.status).toBe(401);
  });

  test('a wrong audience is refused', async () => {
    const res = await post(idp.buildResponse(valid({ audience: 'https://another-sp.example.org' })));
    expect(res.status).toBe(401);
    expect(res.body.error_description).toMatch(/audience mismatch/);
  });

  test('an expired assertion is refused', async () => {
    const res = await post(idp.buildResponse(valid({ notBefore: -3600, notOnOrAfter: -600 })));
    expect(res.status).toBe(401);
    expect(res.body.error_description).toMatch(/expired/);
  });

  test('a replayed assertion is refused', async () => {
    const response = idp.buildResponse(valid());
    expect((await post(response)).status).toBe(303);
    const again = await post(response);
    expect(again.status).toBe(401);
    expect(again.body.error_description).toMatch(/already used/);
  });

  test('an assertion from another IdP entity is refused', async () => {
    const res = await post(idp.buildResponse(valid({ issuer: 'https://rogue-idp.example.org' })));
    expect(res.status).toBe(401);
    expect(res.body.error_description).toMatch(/unexpected IdP/);
  });

  test('a user with no mapped group is refused', async () => {
    const res = await post(idp.buildResponse(valid({ groups: ['cafeteria'] })));
    expect(res.status).toBe(401);
    expect(res.body.error_description).toMatch(/no group of this user maps onto a role/);
  });

  test('RelayState outside this server is not followed', async () => {
    const res = await post(idp.buildResponse(valid()), 'https://evil.example.org/');
    expect(res.status).toBe(303);
    expect(res.headers.location).toBe('/');
  });
});
