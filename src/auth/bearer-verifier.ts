/**
 * Verifies `Authorization: Bearer` tokens: our own (local issuer) or, when configured, those of
 * an external OpenID Connect provider. Unsigned (`alg: none`) tokens are refused before anything
 * else; the unverified `iss` only picks which verifier runs, and that verifier checks it again.
 */
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, type JWTPayload } from 'jose';
import type { AuthConfig, OidcConfig } from './auth-config';
import { TokenError } from './auth-errors';
import { toTokenError, verifyLocalAccessToken } from './access-token';
import type { Principal } from './principal';
import { defaultScopesForRole, isRole, strongestRole, type Role } from './roles';
import { parseScopes } from './scopes';
import type { KeyStore } from './signing-keys';
import { createTokenCache, type TokenCacheOptions } from './token-cache';

/** Turns a bearer token into a principal, or throws TokenError. */
export interface BearerVerifier {
  verify(token: string): Promise<Principal>;
}

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** An OIDC provider's verifier, and the JWKS it currently holds (a new object after each re-fetch). */
interface OidcVerifier {
  verify(token: string): Promise<Principal>;
  revision(): unknown;
}

/**
 * Builds the verifier for the local issuer and the optional OIDC provider. A viewer sends the
 * same token with hundreds of requests, so successful verifications are cached (token-cache.ts:
 * bounded LRU, at most a minute, never beyond `exp`, dropped when the signing keys or the
 * provider's JWKS change): a signature check costs ~150-300 µs, a cache hit ~1 µs. Failures are
 * never cached, and a token differing in any character is a different key.
 */
export function createBearerVerifier(deps: { keys: KeyStore; config: AuthConfig; cache?: TokenCacheOptions }): BearerVerifier {
  const { config, keys } = deps;
  const oidc = config.oidc ? createOidcVerifier(config.oidc, config.clockToleranceSeconds) : undefined;
  const cache = createTokenCache(deps.cache);
  const revisionOf = (p: Principal): unknown => (p.source === 'local' ? keys.revision() : oidc?.revision());
  return {
    async verify(token) {
      const hit = cache.get(token, revisionOf);
      if (hit) return hit;
      if (token.length > 16_384 || !JWT_SHAPE.test(token)) throw new TokenError('token malformed');
      let alg: string | undefined;
      let iss: string | undefined;
      try {
        alg = decodeProtectedHeader(token).alg;
        iss = decodeJwt(token).iss;
      } catch {
        throw new TokenError('token malformed');
      }
      if (!alg || alg.toLowerCase() === 'none') throw new TokenError('unsigned tokens are not accepted');
      if (token.endsWith('.')) throw new TokenError('unsigned tokens are not accepted');
      let principal: Principal;
      // The revision in force before verifying: a key-set change during verification re-verifies next time.
      let revision: unknown;
      if (iss === config.issuer) {
        revision = keys.revision();
        principal = await verifyLocalAccessToken(deps, token);
      } else if (oidc && iss === config.oidc?.issuer) {
        revision = oidc.revision();
        principal = await oidc.verify(token);
        // The first token of a provider fetches its JWKS: remember under the set that verified it.
        if (revision === undefined) revision = oidc.revision();
      } else {
        throw new TokenError('token issuer not accepted');
      }
      cache.set(token, principal, revision);
      return principal;
    },
  };
}

/** Verifier for an external OIDC provider's access tokens (keys fetched and cached from its JWKS URL). */
function createOidcVerifier(cfg: OidcConfig, clockTolerance: number): OidcVerifier {
  const jwks = createRemoteJWKSet(new URL(cfg.jwksUrl), { cooldownDuration: 30_000, cacheMaxAge: 600_000, timeoutDuration: 5_000 });
  const verify = async (token: string): Promise<Principal> => {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, jwks, {
        issuer: cfg.issuer,
        audience: cfg.audience,
        algorithms: cfg.algorithms,
        clockTolerance,
        requiredClaims: ['sub', 'exp'],
      }));
    } catch (err) {
      throw toTokenError(err);
    }
    const role = mapRole(claimAt(payload, cfg.roleClaim), cfg.roleMap);
    if (!role) throw new TokenError('token carries no role this server knows');
    const projects = stringList(claimAt(payload, cfg.projectsClaim));
    const facility = claimAt(payload, cfg.facilityClaim);
    const rawScope = claimAt(payload, cfg.scopeClaim) ?? payload.scp;
    const scopeList = stringList(rawScope);
    const scopes = parseScopes(scopeList);
    const effective = scopes.length > 0 ? scopeList : defaultScopesForRole(role, 'user');
    return {
      subject: payload.sub as string,
      clientId: typeof payload.azp === 'string' ? payload.azp : typeof payload.client_id === 'string' ? payload.client_id : undefined,
      role,
      scopes: scopes.length > 0 ? scopes : parseScopes(effective),
      scopeText: effective.join(' '),
      projects,
      facility: typeof facility === 'string' ? facility : undefined,
      tokenId: typeof payload.jti === 'string' ? payload.jti : undefined,
      issuer: cfg.issuer,
      source: 'oidc',
      expiresAt: payload.exp as number,
      displayName: typeof payload.name === 'string' ? payload.name : undefined,
    };
  };
  return { verify, revision: () => jwks.jwks() };
}

/** Reads a claim by dotted path (`realm_access.roles`). */
function claimAt(payload: JWTPayload, dotted: string): unknown {
  let cur: unknown = payload;
  for (const part of dotted.split('.')) {
    if (!cur || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

/** A claim as a list of strings (arrays, or space/comma separated text). */
export function stringList(value: unknown): string[] {
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === 'string' && v.length > 0);
  if (typeof value === 'string') return value.split(/[\s,]+/).filter(Boolean);
  return [];
}

/**
 * Maps claim values (a role, or groups) onto our strongest role. With a map configured only
 * mapped values count, so an IdP group that happens to be called `admin` grants nothing.
 */
export function mapRole(value: unknown, roleMap: Record<string, Role>): Role | undefined {
  const candidates: Role[] = [];
  const mapping = Object.keys(roleMap).length > 0;
  for (const v of stringList(value)) {
    if (mapping) {
      if (Object.prototype.hasOwnProperty.call(roleMap, v)) candidates.push(roleMap[v]);
    } else if (isRole(v)) candidates.push(v);
  }
  return strongestRole(candidates);
}
