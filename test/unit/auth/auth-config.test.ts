import path from 'node:path';
import { AuthConfigError, loadAuthConfig } from '../../../src/auth/auth-config';

describe('loadAuthConfig', () => {
  test('defaults: issuer from HOST/PORT, keys under DATA_DIR, 10 minute tokens, ES256', () => {
    const c = loadAuthConfig({ DATA_DIR: '/tmp/x' });
    expect(c.issuer).toBe('http://127.0.0.1:8080');
    expect(c.tokenEndpoint).toBe('http://127.0.0.1:8080/oauth2/token');
    expect(c.audience).toBe(c.issuer);
    expect(c.keyDir).toBe(path.resolve('/tmp/x/keys'));
    expect(c.tokenTtlSeconds).toBe(600);
    expect(c.signingAlg).toBe('ES256');
    expect(c.oidc).toBeUndefined();
    expect(c.saml).toBeUndefined();
  });

  test('PUBLIC_BASE_URL is the issuer unless AUTH_ISSUER says otherwise', () => {
    expect(loadAuthConfig({ PUBLIC_BASE_URL: 'https://lake.example.org/' }).issuer).toBe('https://lake.example.org');
    expect(loadAuthConfig({ PUBLIC_BASE_URL: 'https://a.org', AUTH_ISSUER: 'https://b.org' }).issuer).toBe('https://b.org');
    expect(loadAuthConfig({ PUBLIC_BASE_URL: 'https://a.org' }).cookieSecure).toBe(true);
  });

  test('OIDC settings go together', () => {
    expect(() => loadAuthConfig({ AUTH_OIDC_ISSUER: 'https://idp.example.org' })).toThrow(AuthConfigError);
    const c = loadAuthConfig({
      AUTH_OIDC_ISSUER: 'https://idp.example.org',
      AUTH_OIDC_AUDIENCE: 'imaging-lake',
      AUTH_OIDC_JWKS_URL: 'https://idp.example.org/jwks',
      AUTH_OIDC_ROLE_MAP: '{"lake-admins":"admin"}',
      AUTH_OIDC_ALGORITHMS: 'RS256,none',
    });
    expect(c.oidc?.roleMap).toEqual({ 'lake-admins': 'admin' });
    expect(c.oidc?.algorithms).toEqual(['RS256']);
  });

  test('a role map naming an unknown role is refused', () => {
    expect(() => loadAuthConfig({ AUTH_SAML_ROLE_MAP: '{"g":"superuser"}' })).toThrow(/AUTH_SAML_ROLE_MAP/);
  });

  test('a token lifetime outside 60..3600 s is refused', () => {
    expect(() => loadAuthConfig({ AUTH_TOKEN_TTL_SECONDS: '7200' })).toThrow(/AUTH_TOKEN_TTL_SECONDS/);
  });

  test('SAML needs a certificate with the entry point', () => {
    expect(() => loadAuthConfig({ AUTH_SAML_ENTRY_POINT: 'https://idp.test/sso' })).toThrow(/go together/);
    expect(() => loadAuthConfig({ AUTH_SAML_ENTRY_POINT: 'https://idp.test/sso', AUTH_SAML_IDP_CERT: 'not a pem nor a file' })).toThrow(/cannot read/);
  });
});
