/**
 * The four roles of imaging-lake and the SMART v2 scopes each one may hold at most.
 * A token's effective rights are always the intersection of its role and its scopes.
 */

export const ROLES = ['admin', 'data-manager', 'researcher', 'pi'] as const;

/** A role: admin, data-manager, researcher or pi (principal investigator). */
export type Role = (typeof ROLES)[number];

/** True when `value` names one of our roles. */
export function isRole(value: unknown): value is Role {
  return typeof value === 'string' && (ROLES as readonly string[]).includes(value);
}

/** Most privileged first: when an identity maps onto several roles, the first one wins. */
const PRECEDENCE: Role[] = ['admin', 'data-manager', 'pi', 'researcher'];

/** Picks the most privileged of several roles (SAML groups, OIDC claims), or undefined for none. */
export function strongestRole(roles: Iterable<Role>): Role | undefined {
  const set = new Set(roles);
  return PRECEDENCE.find((r) => set.has(r));
}

/**
 * The widest scopes a role's token may carry (SMART App Launch 2.2, scopes-and-launch-context).
 * `user/` for people, `system/` for backend clients; policy code checks the role in addition.
 */
export function defaultScopesForRole(role: Role, context: 'user' | 'system' = 'user'): string[] {
  switch (role) {
    case 'admin':
      return [`${context}/*.cruds`];
    case 'data-manager':
      return [`${context}/*.crus`];
    case 'researcher':
    case 'pi':
      return [`${context}/*.rs`, `${context}/Group.cruds`];
  }
}
