import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { isRole, type Role } from './roles';
import { originOf } from '../http/base-url';

/**
 * Typed configuration of the access layer (tokens, SAML, OIDC, keys). `loadAuthConfig(env)` is
 * meant to be called from config.ts alongside loadConfig, so that nothing else reads the env.
 */

/** External OpenID Connect provider whose bearer tokens we accept. */
export interface OidcConfig {
  issuer: string;
  audience: string;
  jwksUrl: string;
  algorithms: string[];
  /** Claim holding the role (or a group list mapped through roleMap); dotted paths reach nested claims. */
  roleClaim: string;
  roleMap: Record<string, Role>;
  projectsClaim: string;
  facilityClaim: string;
  scopeClaim: string;
}

/** SAML 2.0 service provider settings (browser sign-in). */
export interface SamlConfig {
  /** IdP single sign-on URL (HTTP-Redirect binding). */
  entryPoint: string;
  /** IdP signing certificates (PEM). */
  idpCerts: string[];
  /** Expected Issuer of the IdP's assertions; checked when set. */
  idpIssuer?: string;
  /** Our SP entity id (sent as Issuer in AuthnRequests). */
  spEntityId: string;
  /** Audience the assertions must be restricted to. */
  audience: string;
  callbackUrl: string;
  groupsAttribute: string;
  roleMap: Record<string, Role>;
  projectsAttribute: string;
  /** Groups starting with this prefix name projects (`project:glaucoma` -> glaucoma). */
  projectGroupPrefix?: string;
  facilityAttribute: string;
  displayNameAttribute: string;
  /** Also require the Response element to be signed (the Assertion always must be). */
  wantResponseSigned: boolean;
  clockSkewMs: number;
}

/** Everything the access layer needs. */
export interface AuthConfig {
  /** `iss` of our tokens and base of the OAuth endpoints (no trailing slash). */
  issuer: string;
  /** `aud` of our access tokens. */
  audience: string;
  /** Absolute token endpoint URL: what client assertions must carry as `aud`. */
  tokenEndpoint: string;
  tokenTtlSeconds: number;
  /** Longest lifetime a locally minted (CLI) token may have; keys are kept this long after rotation. */
  localTokenMaxTtlSeconds: number;
  /** Directory of the server's signing keys (private, 0600). */
  keyDir: string;
  signingAlg: 'ES256' | 'RS256';
  clockToleranceSeconds: number;
  /** Name of the cookie that carries the access token after a SAML sign-in. */
  cookieName: string;
  cookieSecure: boolean;
  /** Identity of this server in AuditEvent.source. */
  auditSourceId: string;
  oidc?: OidcConfig;
  saml?: SamlConfig;
}

const booleanString = z.enum(['true', 'false', '1', '0', 'yes', 'no']).transform((v) => v === 'true' || v === '1' || v === 'yes');

const roleMap = z
  .string()
  .transform((text, ctx) => {
    try {
      const parsed = JSON.parse(text) as unknown;
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not an object');
      for (const [k, v] of Object.entries(parsed)) if (!isRole(v)) throw new Error(`${k}: ${String(v)} is not a role`);
      return parsed as Record<string, Role>;
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: `a JSON object of group -> role (admin|data-manager|researcher|pi): ${(err as Error).message}` });
      return z.NEVER;
    }
  });

const AuthEnvSchema = z.object({
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  HOST: z.string().min(1).default('127.0.0.1'),
  DATA_DIR: z.string().min(1).default('./data'),
  PUBLIC_BASE_URL: z.string().url().optional(),
  AUTH_ISSUER: z.string().url().optional(),
  AUTH_AUDIENCE: z.string().min(1).optional(),
  AUTH_TOKEN_TTL_SECONDS: z.coerce.number().int().min(60).max(3600).default(600),
  AUTH_LOCAL_TOKEN_MAX_TTL_SECONDS: z.coerce.number().int().min(60).max(30 * 86400).default(86400),
  AUTH_KEY_DIR: z.string().min(1).optional(),
  AUTH_SIGNING_ALG: z.enum(['ES256', 'RS256']).default('ES256'),
  AUTH_CLOCK_TOLERANCE_SECONDS: z.coerce.number().int().min(0).max(300).default(30),
  AUTH_COOKIE_NAME: z.string().regex(/^[\w-]{1,64}$/).default('il_access_token'),
  AUTH_COOKIE_SECURE: booleanString.optional(),
  AUDIT_SOURCE_ID: z.string().min(1).default('imaging-lake'),

  AUTH_OIDC_ISSUER: z.string().url().optional(),
  AUTH_OIDC_AUDIENCE: z.string().min(1).optional(),
  AUTH_OIDC_JWKS_URL: z.string().url().optional(),
  AUTH_OIDC_ALGORITHMS: z.string().default('RS256,ES256,PS256,RS384,ES384'),
  AUTH_OIDC_ROLE_CLAIM: z.string().min(1).default('role'),
  AUTH_OIDC_ROLE_MAP: roleMap.optional(),
  AUTH_OIDC_PROJECTS_CLAIM: z.string().min(1).default('projects'),
  AUTH_OIDC_FACILITY_CLAIM: z.string().min(1).default('facility'),
  AUTH_OIDC_SCOPE_CLAIM: z.string().min(1).default('scope'),

  AUTH_SAML_ENTRY_POINT: z.string().url().optional(),
  AUTH_SAML_IDP_CERT: z.string().min(1).optional(),
  AUTH_SAML_IDP_ISSUER: z.string().min(1).optional(),
  AUTH_SAML_SP_ENTITY_ID: z.string().min(1).optional(),
  AUTH_SAML_AUDIENCE: z.string().min(1).optional(),
  AUTH_SAML_CALLBACK_URL: z.string().url().optional(),
  AUTH_SAML_GROUPS_ATTRIBUTE: z.string().min(1).default('groups'),
  AUTH_SAML_ROLE_MAP: roleMap.optional(),
  AUTH_SAML_PROJECTS_ATTRIBUTE: z.string().min(1).default('projects'),
  AUTH_SAML_PROJECT_GROUP_PREFIX: z.string().min(1).optional(),
  AUTH_SAML_FACILITY_ATTRIBUTE: z.string().min(1).default('facility'),
  AUTH_SAML_DISPLAY_NAME_ATTRIBUTE: z.string().min(1).default('displayName'),
  AUTH_SAML_WANT_RESPONSE_SIGNED: booleanString.default(false),
  AUTH_SAML_CLOCK_SKEW_SECONDS: z.coerce.number().int().min(0).max(600).default(60),
});

/** Thrown when the environment does not describe a valid access configuration. */
export class AuthConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuthConfigError';
  }
}

/** Parses and validates the AUTH_* (and shared) variables into an AuthConfig; throws AuthConfigError naming every bad one. */
export function loadAuthConfig(env: Record<string, string | undefined>): AuthConfig {
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = AuthEnvSchema.safeParse(cleaned);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new AuthConfigError(`invalid access configuration: ${problems}`);
  }
  const e = parsed.data;
  const issuer = (e.AUTH_ISSUER ?? e.PUBLIC_BASE_URL ?? originOf(e.HOST, e.PORT)).replace(/\/+$/, '');
  const config: AuthConfig = {
    issuer,
    audience: e.AUTH_AUDIENCE ?? issuer,
    tokenEndpoint: `${issuer}/oauth2/token`,
    tokenTtlSeconds: e.AUTH_TOKEN_TTL_SECONDS,
    localTokenMaxTtlSeconds: Math.max(e.AUTH_LOCAL_TOKEN_MAX_TTL_SECONDS, e.AUTH_TOKEN_TTL_SECONDS),
    keyDir: path.resolve(e.AUTH_KEY_DIR ?? path.join(e.DATA_DIR, 'keys')),
    signingAlg: e.AUTH_SIGNING_ALG,
    clockToleranceSeconds: e.AUTH_CLOCK_TOLERANCE_SECONDS,
    cookieName: e.AUTH_COOKIE_NAME,
    cookieSecure: e.AUTH_COOKIE_SECURE ?? issuer.startsWith('https:'),
    auditSourceId: e.AUDIT_SOURCE_ID,
  };

  const oidcSet = [e.AUTH_OIDC_ISSUER, e.AUTH_OIDC_AUDIENCE, e.AUTH_OIDC_JWKS_URL].filter(Boolean).length;
  if (oidcSet > 0 && oidcSet < 3) throw new AuthConfigError('invalid access configuration: AUTH_OIDC_ISSUER, AUTH_OIDC_AUDIENCE and AUTH_OIDC_JWKS_URL go together');
  if (e.AUTH_OIDC_ISSUER && e.AUTH_OIDC_AUDIENCE && e.AUTH_OIDC_JWKS_URL) {
    if (e.AUTH_OIDC_ISSUER.replace(/\/+$/, '') === issuer) throw new AuthConfigError('invalid access configuration: AUTH_OIDC_ISSUER must differ from our own issuer');
    config.oidc = {
      issuer: e.AUTH_OIDC_ISSUER,
      audience: e.AUTH_OIDC_AUDIENCE,
      jwksUrl: e.AUTH_OIDC_JWKS_URL,
      algorithms: e.AUTH_OIDC_ALGORITHMS.split(',').map((a) => a.trim()).filter((a) => a && a.toLowerCase() !== 'none'),
      roleClaim: e.AUTH_OIDC_ROLE_CLAIM,
      roleMap: e.AUTH_OIDC_ROLE_MAP ?? {},
      projectsClaim: e.AUTH_OIDC_PROJECTS_CLAIM,
      facilityClaim: e.AUTH_OIDC_FACILITY_CLAIM,
      scopeClaim: e.AUTH_OIDC_SCOPE_CLAIM,
    };
  }

  const samlSet = [e.AUTH_SAML_ENTRY_POINT, e.AUTH_SAML_IDP_CERT].filter(Boolean).length;
  if (samlSet === 1) throw new AuthConfigError('invalid access configuration: AUTH_SAML_ENTRY_POINT and AUTH_SAML_IDP_CERT go together');
  if (e.AUTH_SAML_ENTRY_POINT && e.AUTH_SAML_IDP_CERT) {
    const spEntityId = e.AUTH_SAML_SP_ENTITY_ID ?? `${issuer}/auth/saml/metadata`;
    config.saml = {
      entryPoint: e.AUTH_SAML_ENTRY_POINT,
      idpCerts: readCertificates(e.AUTH_SAML_IDP_CERT),
      idpIssuer: e.AUTH_SAML_IDP_ISSUER,
      spEntityId,
      audience: e.AUTH_SAML_AUDIENCE ?? spEntityId,
      callbackUrl: e.AUTH_SAML_CALLBACK_URL ?? `${issuer}/auth/saml/callback`,
      groupsAttribute: e.AUTH_SAML_GROUPS_ATTRIBUTE,
      roleMap: e.AUTH_SAML_ROLE_MAP ?? {},
      projectsAttribute: e.AUTH_SAML_PROJECTS_ATTRIBUTE,
      projectGroupPrefix: e.AUTH_SAML_PROJECT_GROUP_PREFIX,
      facilityAttribute: e.AUTH_SAML_FACILITY_ATTRIBUTE,
      displayNameAttribute: e.AUTH_SAML_DISPLAY_NAME_ATTRIBUTE,
      wantResponseSigned: e.AUTH_SAML_WANT_RESPONSE_SIGNED,
      clockSkewMs: e.AUTH_SAML_CLOCK_SKEW_SECONDS * 1000,
    };
  }
  return config;
}

/** AUTH_SAML_IDP_CERT is PEM text (one or more certificates) or the path of a PEM file. */
function readCertificates(value: string): string[] {
  let text = value;
  if (!value.includes('-----BEGIN')) {
    try {
      text = fs.readFileSync(path.resolve(value), 'utf8');
    } catch (err) {
      throw new AuthConfigError(`invalid access configuration: AUTH_SAML_IDP_CERT: cannot read ${value}: ${(err as Error).message}`);
    }
  }
  const certs = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (certs.length === 0) throw new AuthConfigError('invalid access configuration: AUTH_SAML_IDP_CERT holds no PEM certificate');
  return certs;
}
