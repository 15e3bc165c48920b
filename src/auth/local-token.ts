/**
 * The local issuer for scripts: `imaging-lake token --role ... [--project P] [--scope ...]`.
 * Signs with the same key files the server uses (DATA_DIR/keys), so no database is needed and
 * it works while the server runs, even on the single-process embedded engine.
 */
import type { AuthConfig } from './auth-config';
import { issueAccessToken, type IssuedToken } from './access-token';
import { defaultScopesForRole, isRole, type Role } from './roles';
import { grantScopes, parseScopes } from './scopes';
import { openKeyStore, type KeyStore } from './signing-keys';

/** What to put in a locally minted token. */
export interface LocalTokenRequest {
  role: Role;
  projects?: string[];
  /** Space-delimited SMART scopes; narrowed to what the role may hold. Default: the role's scopes. */
  scope?: string;
  /** Default `cli:<role>`. */
  subject?: string;
  ttlSeconds?: number;
  facility?: string;
}

/** Mints a bearer token the running server accepts; throws on a bad role, scope or lifetime. */
export async function mintLocalToken(request: LocalTokenRequest, deps: { config: AuthConfig; keys?: KeyStore }): Promise<IssuedToken & { scope: string }> {
  if (!isRole(request.role)) throw new Error('role must be one of admin, data-manager, researcher, pi');
  const ttl = request.ttlSeconds ?? deps.config.tokenTtlSeconds;
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > deps.config.localTokenMaxTtlSeconds) {
    throw new Error(`ttl must be 1..${deps.config.localTokenMaxTtlSeconds} seconds`);
  }
  const roleScopes = defaultScopesForRole(request.role, 'user');
  let scope: string;
  if (request.scope) {
    if (parseScopes(request.scope).length === 0) throw new Error(`no SMART resource scope in "${request.scope}"`);
    const granted = grantScopes(request.scope, [...roleScopes, ...defaultScopesForRole(request.role, 'system')]);
    if (granted.length === 0) throw new Error(`role ${request.role} may hold none of "${request.scope}"`);
    scope = granted.join(' ');
  } else {
    scope = roleScopes.join(' ');
  }
  const projects = [...new Set(request.projects ?? [])];
  for (const p of projects) if (!/^[\w.-]{1,64}$/.test(p)) throw new Error(`not a project id: ${p}`);
  const keys = deps.keys ?? (await openKeyStore(deps.config));
  const issued = await issueAccessToken(
    { keys, config: deps.config },
    { subject: request.subject ?? `cli:${request.role}`, role: request.role, scope, projects, facility: request.facility },
    ttl,
  );
  return { ...issued, scope };
}
