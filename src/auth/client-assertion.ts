/**
 * SMART Backend Services client authentication (SMART App Launch 2.2, "Client Authentication:
 * Asymmetric (public key)"; RFC 7523 2.2): a JWT signed with RS384 or ES384, `iss` = `sub` =
 * client_id, `aud` = our token endpoint, `exp` at most five minutes ahead, a `jti` never seen.
 */
import { createLocalJWKSet, createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, type JWTVerifyGetKey } from 'jose';
import type { Knex } from 'knex';
import type { AuthConfig } from './auth-config';
import { OAuthError } from './auth-errors';
import { toTokenError } from './access-token';
import { findClient, type ClientRegistration } from './client-registry';
import { claimAssertionId } from './replay-guard';

export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
export const ASSERTION_ALGORITHMS = ['RS384', 'ES384'];
/** SMART: `exp` no more than five minutes in the future. */
const MAX_ASSERTION_LIFETIME_SECONDS = 300;

/** Remote JWK Sets by URL, fetched on demand and cached by jose (cooldown on unknown kids). */
export type RemoteJwksCache = Map<string, JWTVerifyGetKey>;

/** A verified client assertion. */
export interface AuthenticatedClient {
  client: ClientRegistration;
  jti: string;
}

function fail(description: string): OAuthError {
  return new OAuthError(401, 'invalid_client', description);
}

/** Verifies a client assertion and burns its jti; throws OAuthError(invalid_client) on any problem. */
export async function authenticateClientAssertion(
  deps: { knex: Knex; config: Pick<AuthConfig, 'tokenEndpoint' | 'clockToleranceSeconds'>; remoteJwks: RemoteJwksCache },
  assertion: string,
): Promise<AuthenticatedClient> {
  let header: ReturnType<typeof decodeProtectedHeader>;
  let claims: ReturnType<typeof decodeJwt>;
  try {
    header = decodeProtectedHeader(assertion);
    claims = decodeJwt(assertion);
  } catch {
    throw fail('client_assertion is not a JWT');
  }
  if (!header.alg || !ASSERTION_ALGORITHMS.includes(header.alg)) throw fail('client_assertion must be signed with RS384 or ES384');
  if (!header.kid) throw fail('client_assertion header needs a kid');
  if (header.typ !== undefined && header.typ.toUpperCase() !== 'JWT') throw fail('client_assertion typ must be JWT');
  const clientId = claims.iss;
  if (typeof clientId !== 'string' || clientId === '' || claims.sub !== clientId) throw fail('client_assertion iss and sub must both be the client_id');

  const client = await findClient(deps.knex, clientId);
  if (!client) throw fail('unknown client');

  let keys: JWTVerifyGetKey;
  if (client.jwks) {
    keys = createLocalJWKSet(client.jwks);
  } else if (client.jwksUri) {
    // SMART: a jku header, when present, must be the registered JWKS URL.
    if (header.jku !== undefined && header.jku !== client.jwksUri) throw fail('client_assertion jku is not the registered JWKS URL');
    let remote = deps.remoteJwks.get(client.jwksUri);
    if (!remote) {
      remote = createRemoteJWKSet(new URL(client.jwksUri), { cooldownDuration: 10_000, cacheMaxAge: 300_000, timeoutDuration: 5_000 });
      deps.remoteJwks.set(client.jwksUri, remote);
    }
    keys = remote;
  } else {
    throw fail('client has no keys registered');
  }

  let exp: number;
  let jti: string;
  try {
    const { payload } = await jwtVerify(assertion, keys, {
      algorithms: ASSERTION_ALGORITHMS,
      issuer: clientId,
      subject: clientId,
      audience: deps.config.tokenEndpoint,
      clockTolerance: deps.config.clockToleranceSeconds,
      requiredClaims: ['exp', 'jti'],
    });
    exp = payload.exp as number;
    jti = payload.jti as string;
  } catch (err) {
    throw fail(`client_assertion rejected: ${toTokenError(err).message.replace(/^token /, '')}`);
  }
  const now = Math.floor(Date.now() / 1000);
  if (exp > now + MAX_ASSERTION_LIFETIME_SECONDS + deps.config.clockToleranceSeconds) throw fail('client_assertion exp is more than five minutes ahead');
  if (typeof jti !== 'string' || jti.length === 0 || jti.length > 256) throw fail('client_assertion jti missing or too long');
  const fresh = await claimAssertionId(deps.knex, `client:${clientId}`, jti, new Date((exp + deps.config.clockToleranceSeconds) * 1000));
  if (!fresh) throw fail('client_assertion jti already used');
  return { client, jti };
}
