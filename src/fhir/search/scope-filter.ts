import type { FhirDefinitions } from '../definitions';
import type { AccessFilter } from '../store/access';
import { buildFilterSql } from './search-sql';
import { parseFilter } from './search-request';

/** What the caller's scopes let it see, per type (src/auth/policy.ts `scopeRowRules`). */
export interface ScopeRows {
  /** Types whose rows are all visible. */
  readonly whole: readonly string[];
  /** Types whose rows are visible where one of the parameter sets matches. */
  readonly granular: ReadonlyMap<string, ReadonlyArray<Record<string, string>>>;
  /** Parameter sets that hold for any type: applied to the named types and to `askedType`. */
  readonly anyType: ReadonlyArray<Record<string, string>>;
}

/**
 * SMART granular scopes as a row filter over the resource table: a row is visible when its type
 * is visible whole, or when it matches every parameter of one of its type's scopes. Each
 * parameter set is compiled by the search engine itself (`Condition.rs?code=...|H40` matches
 * exactly what `Condition?code=...|H40` finds). A parameter set this server cannot evaluate
 * (an unknown or unsupported parameter, a malformed value) grants nothing: a scope narrows, so
 * failing to understand it must not widen. `askedType` is the type the request names (a `*`
 * scope's parameters are applied to it and to the named types).
 */
export function scopeRowFilter(defs: FhirDefinitions, rows: ScopeRows, askedType?: string): AccessFilter {
  const typed = new Map<string, Array<Record<string, string>>>();
  for (const [type, sets] of rows.granular) typed.set(type, [...sets, ...rows.anyType]);
  if (rows.anyType.length > 0 && askedType && defs.resourceTypes.has(askedType) && !rows.whole.includes(askedType) && !typed.has(askedType)) {
    typed.set(askedType, [...rows.anyType]);
  }
  return (alias) => {
    const parts: string[] = [];
    const bindings: unknown[] = [];
    if (rows.whole.length > 0) {
      parts.push(`${alias}.resource_type = ANY(?::text[])`);
      bindings.push([...rows.whole]);
    }
    for (const [type, sets] of typed) {
      const alternatives: Array<{ sql: string; bindings: unknown[] }> = [];
      for (const params of sets) {
        const compiled = compileParams(defs, type, params, alias);
        if (compiled) alternatives.push(compiled);
      }
      if (alternatives.length === 0) continue;
      parts.push(`(${alias}.resource_type = ? AND (${alternatives.map((a) => `(${a.sql})`).join(' OR ')}))`);
      bindings.push(type, ...alternatives.flatMap((a) => a.bindings));
    }
    return parts.length > 0 ? { sql: parts.join(' OR '), bindings } : { sql: 'FALSE', bindings: [] };
  };
}

function compileParams(defs: FhirDefinitions, type: string, params: Record<string, string>, alias: string): { sql: string; bindings: unknown[] } | undefined {
  try {
    const filters = Object.entries(params).map(([key, value]) => parseFilter(defs, type, key, value));
    if (filters.length === 0 || filters.some((f) => f.values.length === 0)) return undefined;
    return buildFilterSql(type, filters, alias, {});
  } catch {
    return undefined;
  }
}

/** Rows visible through both filters; either may be absent (no restriction). */
export function bothFilters(a: AccessFilter | undefined, b: AccessFilter | undefined): AccessFilter | undefined {
  if (!a) return b;
  if (!b) return a;
  return (alias) => {
    const x = a(alias);
    const y = b(alias);
    return { sql: `(${x.sql}) AND (${y.sql})`, bindings: [...x.bindings, ...y.bindings] };
  };
}
