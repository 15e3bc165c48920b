/**
 * Our access tokens: short-lived JWTs (RFC 9068 `at+jwt`) signed by the server's current key.
 * Claims: iss, aud, sub, client_id, scope (SMART v2), role, projects, facility, jti, iat, exp.
 */
import { randomUUID } from 'node:crypto';
import { SignJWT, jwtVerify, errors as joseErrors, type JWTPayload } from 'jose';
import type { AuthConfig } from './auth-config';
import { TokenError } from './auth-errors';
import type { Principal } from './principal';
import { isRole, type Role } from './roles';
import { parseScopes } from './scopes';
import type { KeyStore } from './signing-keys';

/** What an access token says about its holder. */
export interface AccessTokenContent {
  subject: string;
  clientId?: string;
  role: Role;
  /** Space-delimited SMART scopes. */
  scope: string;
  projects: string[];
  facility?: string;
  displayName?: string;
}

/** A signed token and its bookkeeping. */
export interface IssuedToken {
  accessToken: string;
  tokenId: string;
  expiresIn: number;
  expiresAt: number;
}

/** The claims of our access tokens (RFC 7519 registered claims plus ours). */
export interface AccessTokenClaims extends JWTPayload {
  sub: string;
  client_id?: string;
  scope: string;
  role: Role;
  projects: string[];
  facility?: string;
  name?: string;
  jti: string;
  iat: number;
  exp: number;
}

export const ACCESS_TOKEN_TYPE = 'at+jwt';

/** Signs an access token with the current key (RFC 9068 2). */
export async function issueAccessToken(
  deps: { keys: KeyStore; config: Pick<AuthConfig, 'issuer' | 'audience'> },
  content: AccessTokenContent,
  ttlSeconds: number,
): Promise<IssuedToken> {
  const key = await deps.keys.current();
  const now = Math.floor(Date.now() / 1000);
  const tokenId = randomUUID();
  const payload: Record<string, unknown> = { scope: content.scope, role: content.role, projects: content.projects };
  if (content.clientId) payload.client_id = content.clientId;
  if (content.facility) payload.facility = content.facility;
  if (content.displayName) payload.name = content.displayName;
  const accessToken = await new SignJWT(payload)
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: ACCESS_TOKEN_TYPE })
    .setIssuer(deps.config.issuer)
    .setAudience(deps.config.audience)
    .setSubject(content.subject)
    .setJti(tokenId)
    .setIssuedAt(now)
    .setExpirationTime(now + ttlSeconds)
    .sign(key.privateKey);
  return { accessToken, tokenId, expiresIn: ttlSeconds, expiresAt: now + ttlSeconds };
}

/** Verifies one of our own access tokens and returns its principal; throws TokenError. */
export async function verifyLocalAccessToken(
  deps: { keys: KeyStore; config: Pick<AuthConfig, 'issuer' | 'audience' | 'clockToleranceSeconds' | 'localTokenMaxTtlSeconds'> },
  token: string,
): Promise<Principal> {
  let payload: JWTPayload;
  try {
    const verified = await jwtVerify(
      token,
      async (header) => {
        const key = header.kid ? await deps.keys.find(header.kid) : undefined;
        if (!key) throw new TokenError('token signed by an unknown key');
        if (key.alg !== header.alg) throw new TokenError('token algorithm does not match its key');
        return key.publicKey;
      },
      {
        issuer: deps.config.issuer,
        audience: deps.config.audience,
        algorithms: ['ES256', 'RS256'],
        typ: ACCESS_TOKEN_TYPE,
        clockTolerance: deps.config.clockToleranceSeconds,
        requiredClaims: ['sub', 'jti', 'iat', 'exp'],
      },
    );
    payload = verified.payload;
  } catch (err) {
    throw toTokenError(err);
  }
  const claims = payload as Partial<AccessTokenClaims>;
  if ((claims.exp as number) - (claims.iat as number) > deps.config.localTokenMaxTtlSeconds + 1) throw new TokenError('token lifetime too long');
  if (!isRole(claims.role)) throw new TokenError('token carries no valid role');
  const projects = Array.isArray(claims.projects) ? claims.projects.filter((p): p is string => typeof p === 'string') : [];
  const scopeText = typeof claims.scope === 'string' ? claims.scope : '';
  return {
    subject: claims.sub as string,
    clientId: typeof claims.client_id === 'string' ? claims.client_id : undefined,
    role: claims.role,
    scopes: parseScopes(scopeText),
    scopeText,
    projects,
    facility: typeof claims.facility === 'string' ? claims.facility : undefined,
    tokenId: claims.jti,
    issuer: deps.config.issuer,
    source: 'local',
    expiresAt: claims.exp as number,
    displayName: typeof claims.name === 'string' ? claims.name : undefined,
  };
}

/** Maps jose's verification errors onto a short, safe description. */
export function toTokenError(err: unknown): TokenError {
  if (err instanceof TokenError) return err;
  if (err instanceof joseErrors.JWTExpired) return new TokenError('token expired');
  if (err instanceof joseErrors.JWTClaimValidationFailed) return new TokenError(`token claim "${err.claim}" invalid`);
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return new TokenError('token signature invalid');
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return new TokenError('token algorithm not allowed');
  if (err instanceof joseErrors.JWKSNoMatchingKey) return new TokenError('token signed by an unknown key');
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid) return new TokenError('token malformed');
  if (err instanceof joseErrors.JOSEError) return new TokenError('token invalid');
  return new TokenError('token could not be verified');
}
