/**
 * Token introspection (RFC 7662). The caller must itself present a valid bearer token: an admin
 * may introspect any token, anyone else only tokens issued to the same client or subject. Every
 * other case answers `{ "active": false }`, so the endpoint reveals nothing about foreign tokens.
 */
import { TokenError } from './auth-errors';
import type { BearerVerifier } from './bearer-verifier';
import type { Principal } from './principal';

/** RFC 7662 2.2 response. */
export interface IntrospectionResponse {
  active: boolean;
  scope?: string;
  client_id?: string;
  sub?: string;
  exp?: number;
  iss?: string;
  aud?: string;
  jti?: string;
  token_type?: 'Bearer';
  role?: string;
  projects?: string[];
  facility?: string;
}

/** Introspects `token` on behalf of `caller`. */
export async function introspectToken(deps: { verifier: BearerVerifier; audience: string }, caller: Principal, token: string): Promise<IntrospectionResponse> {
  let target: Principal;
  try {
    target = await deps.verifier.verify(token);
  } catch (err) {
    if (err instanceof TokenError) return { active: false };
    throw err;
  }
  const mayAsk =
    caller.role === 'admin' ||
    (caller.clientId !== undefined && caller.clientId === target.clientId) ||
    (caller.subject === target.subject && caller.issuer === target.issuer);
  if (!mayAsk) return { active: false };
  return {
    active: true,
    scope: target.scopeText,
    client_id: target.clientId,
    sub: target.subject,
    exp: target.expiresAt,
    iss: target.issuer,
    aud: target.source === 'local' ? deps.audience : undefined,
    jti: target.tokenId,
    token_type: 'Bearer',
    role: target.role,
    projects: [...target.projects],
    facility: target.facility,
  };
}
