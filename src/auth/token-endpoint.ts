/**
 * POST /oauth2/token for SMART Backend Services (client_credentials grant with private_key_jwt
 * client authentication). Transport-neutral: takes the form fields, returns the token response
 * (RFC 6749 5.1) or throws OAuthError (RFC 6749 5.2).
 */
import type { Knex } from 'knex';
import type { AuthConfig } from './auth-config';
import { OAuthError } from './auth-errors';
import { issueAccessToken } from './access-token';
import { authenticateClientAssertion, CLIENT_ASSERTION_TYPE, type RemoteJwksCache } from './client-assertion';
import type { ClientRegistration } from './client-registry';
import { grantScopes } from './scopes';
import type { KeyStore } from './signing-keys';

/** RFC 6749 5.1 successful response. */
export interface TokenResponse {
  access_token: string;
  token_type: 'bearer';
  expires_in: number;
  scope: string;
}

/** What the token endpoint needs. */
export interface TokenEndpointDeps {
  knex: Knex;
  config: AuthConfig;
  keys: KeyStore;
  remoteJwks: RemoteJwksCache;
}

/** The outcome, with the client when it could be identified (for the audit trail). */
export interface TokenResult {
  response: TokenResponse;
  client: ClientRegistration;
  tokenId: string;
}

function single(form: Record<string, unknown>, name: string): string | undefined {
  const v = form[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new OAuthError(400, 'invalid_request', `${name} must be given once`);
  return v;
}

/** Handles one token request (SMART App Launch 2.2 Backend Services, "Obtaining an access token"). */
export async function exchangeClientCredentials(deps: TokenEndpointDeps, form: Record<string, unknown>): Promise<TokenResult> {
  const grantType = single(form, 'grant_type');
  if (!grantType) throw new OAuthError(400, 'invalid_request', 'grant_type is required');
  if (grantType !== 'client_credentials') throw new OAuthError(400, 'unsupported_grant_type', 'only client_credentials is supported');
  const assertionType = single(form, 'client_assertion_type');
  const assertion = single(form, 'client_assertion');
  if (!assertion || !assertionType) throw new OAuthError(401, 'invalid_client', 'client_assertion and client_assertion_type are required (private_key_jwt)');
  if (assertionType !== CLIENT_ASSERTION_TYPE) throw new OAuthError(401, 'invalid_client', `client_assertion_type must be ${CLIENT_ASSERTION_TYPE}`);
  const requested = single(form, 'scope');

  const { client } = await authenticateClientAssertion(deps, assertion);
  const formClientId = single(form, 'client_id');
  if (formClientId !== undefined && formClientId !== client.clientId) throw new OAuthError(401, 'invalid_client', 'client_id does not match the assertion');
  if (!client.enabled) throw new OAuthError(400, 'invalid_grant', 'the client registration is disabled');

  if (!requested || !requested.trim()) throw new OAuthError(400, 'invalid_scope', 'scope is required');
  const granted = grantScopes(requested, client.scopes);
  if (granted.length === 0) throw new OAuthError(400, 'invalid_scope', 'none of the requested scopes is allowed for this client');

  const scope = granted.join(' ');
  const issued = await issueAccessToken(
    deps,
    { subject: client.clientId, clientId: client.clientId, role: client.role, scope, projects: client.projects, facility: client.facility },
    deps.config.tokenTtlSeconds,
  );
  return {
    response: { access_token: issued.accessToken, token_type: 'bearer', expires_in: issued.expiresIn, scope },
    client,
    tokenId: issued.tokenId,
  };
}
