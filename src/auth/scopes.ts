/**
 * SMART on FHIR scopes (SMART App Launch 2.2, "Scopes for requesting FHIR resources"):
 * v2 `context/Type.cruds[?param=value&...]` and v1 `context/Type.read|write|*`.
 */

export type ScopeContext = 'patient' | 'user' | 'system';
export type ScopePermission = 'c' | 'r' | 'u' | 'd' | 's';

/** One parsed resource scope. `resourceType` is `*` for the wildcard. */
export interface ResourceScope {
  readonly raw: string;
  readonly context: ScopeContext;
  readonly resourceType: string;
  readonly permissions: ReadonlySet<ScopePermission>;
  /** Granular narrowing by search parameters (SMART 2.2 3.x); empty when the scope is unrestricted. */
  readonly params: Readonly<Record<string, string>>;
}

const ORDER: ScopePermission[] = ['c', 'r', 'u', 'd', 's'];
const V1: Record<string, ScopePermission[]> = { read: ['r', 's'], write: ['c', 'u', 'd'], '*': ['c', 'r', 'u', 'd', 's'] };
const SCOPE_RE = /^(patient|user|system)\/(\*|[A-Z][A-Za-z]{0,63})\.([a-z*]+)(?:\?(.*))?$/;

/** Parses one scope string; returns null for non-resource scopes (openid, launch, ...) or malformed ones. */
export function parseScope(raw: string): ResourceScope | null {
  const m = SCOPE_RE.exec(raw);
  if (!m) return null;
  const [, context, resourceType, perms, query] = m;
  let permissions: ScopePermission[];
  if (V1[perms]) {
    if (query !== undefined) return null; // v1 scopes have no granular form
    permissions = V1[perms];
  } else {
    // v2: letters in c, r, u, d, s order, each at most once.
    if (!/^c?r?u?d?s?$/.test(perms) || perms.length === 0) return null;
    permissions = perms.split('') as ScopePermission[];
  }
  const params: Record<string, string> = {};
  if (query !== undefined) {
    if (query === '') return null;
    for (const pair of query.split('&')) {
      const eq = pair.indexOf('=');
      if (eq <= 0) return null;
      const name = pair.slice(0, eq);
      if (!/^[A-Za-z_][\w:.-]*$/.test(name)) return null;
      let value: string;
      try {
        value = decodeURIComponent(pair.slice(eq + 1));
      } catch {
        return null;
      }
      if (value === '' || name in params) return null;
      params[name] = value;
    }
  }
  return { raw, context: context as ScopeContext, resourceType, permissions: new Set(permissions), params };
}

/** Splits a space-delimited scope string (RFC 6749 3.3) and parses the resource scopes in it. */
export function parseScopes(scope: string | string[] | undefined): ResourceScope[] {
  const list = Array.isArray(scope) ? scope : (scope ?? '').split(/\s+/);
  const out: ResourceScope[] = [];
  for (const s of list) {
    if (!s) continue;
    const parsed = parseScope(s);
    if (parsed) out.push(parsed);
  }
  return out;
}

/** Formats a scope back into its v2 form (v1 input comes out as v2). */
export function formatScope(s: ResourceScope): string {
  const perms = ORDER.filter((p) => s.permissions.has(p)).join('');
  const query = Object.entries(s.params)
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  return `${s.context}/${s.resourceType}.${perms}${query ? `?${query}` : ''}`;
}

/** True when `outer` grants everything `inner` asks for (same context, type and permissions, no wider filter). */
export function scopeCovers(outer: ResourceScope, inner: ResourceScope): boolean {
  if (outer.context !== inner.context) return false;
  if (outer.resourceType !== '*' && outer.resourceType !== inner.resourceType) return false;
  for (const p of inner.permissions) if (!outer.permissions.has(p)) return false;
  // Every restriction of the outer scope must also restrict the inner one identically.
  for (const [k, v] of Object.entries(outer.params)) if (inner.params[k] !== v) return false;
  return true;
}

/** The scope granting exactly what both `a` and `b` grant, or null when they share nothing. */
export function intersectScopes(a: ResourceScope, b: ResourceScope): ResourceScope | null {
  if (a.context !== b.context) return null;
  let resourceType: string;
  if (a.resourceType === '*') resourceType = b.resourceType;
  else if (b.resourceType === '*' || b.resourceType === a.resourceType) resourceType = a.resourceType;
  else return null;
  const permissions = new Set([...a.permissions].filter((p) => b.permissions.has(p)));
  if (permissions.size === 0) return null;
  const params: Record<string, string> = { ...a.params };
  for (const [k, v] of Object.entries(b.params)) {
    if (k in params && params[k] !== v) return null;
    params[k] = v;
  }
  const out: ResourceScope = { raw: '', context: a.context, resourceType, permissions, params };
  return { ...out, raw: formatScope(out) };
}

/**
 * The part of `requested` that `allowed` permits (RFC 6749 3.3: the server may grant less than
 * asked): the pairwise intersections, without any scope another granted scope already covers.
 * Returns v2 scope strings.
 */
export function grantScopes(requested: string, allowed: string[]): string[] {
  const allowedParsed = parseScopes(allowed);
  const candidates: ResourceScope[] = [];
  for (const req of parseScopes(requested)) {
    for (const a of allowedParsed) {
      const both = intersectScopes(req, a);
      if (both) candidates.push(both);
    }
  }
  const kept = candidates.filter((c, i) => !candidates.some((o, j) => j !== i && scopeCovers(o, c) && (!scopeCovers(c, o) || j < i)));
  return [...new Set(kept.map((k) => k.raw))];
}
