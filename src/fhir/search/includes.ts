import type { Knex } from 'knex';
import type { FhirDefinitions } from '../definitions';
import { accessSql, type AccessFilter } from '../store/access';
import { toStored, type StoredResource } from '../store/resource-store';
import type { IncludeRule } from './search-request';
import { PAGE_ALIAS, type Sql } from './search-sql';
import type { SearchRequest } from './search-request';
import { queryRows } from '../store/raw';

/** At most this many resources are added by _include/_revinclude to one page. */
export const MAX_INCLUDED = 1000;
const MAX_ITERATIONS = 4;
const COLUMNS = 'r.rid, r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.content';

/**
 * Where the resources an include step starts from come from, as SQL array expressions: the
 * rids of the sources of a given type and, per type, their ids. Either bound arrays (resources
 * already read) or subqueries over the page being read in the same statement.
 */
export interface IncludeSources {
  /** Types present among the sources. */
  types: readonly string[];
  /** A bigint[] expression: the rids of the sources of `type`. */
  rids(type: string): Sql;
  /** A text[] expression: the ids of the sources of `type`. */
  ids(type: string): Sql;
}

/** Sources given as resources already read (bound arrays). */
function boundSources(from: StoredResource[]): IncludeSources {
  const byType = new Map<string, StoredResource[]>();
  for (const r of from) {
    const list = byType.get(r.resourceType);
    if (list) list.push(r);
    else byType.set(r.resourceType, [r]);
  }
  return {
    types: [...byType.keys()],
    rids: (type) => ({ sql: '?::bigint[]', bindings: [(byType.get(type) ?? []).map((r) => r.rid)] }),
    ids: (type) => ({ sql: '?::text[]', bindings: [(byType.get(type) ?? []).map((r) => r.id)] }),
  };
}

/**
 * The first round of a search's includes, as queries over the page read in the same statement
 * (search-sql withPageParts): every match is of the searched type, and the matches are the
 * page's first `count` rows (one more is read to know whether a next page exists).
 */
export function firstRoundSql(defs: FhirDefinitions, req: SearchRequest, access?: AccessFilter): Sql[] {
  const matches = (column: string): Sql => ({ sql: `ARRAY(SELECT ${PAGE_ALIAS}.${column} FROM ${PAGE_ALIAS} WHERE ${PAGE_ALIAS}.ord <= ?)`, bindings: [req.count] });
  const sources: IncludeSources = { types: [req.resourceType], rids: () => matches('rid'), ids: () => matches('id') };
  const steps = [...req.includes.map((rule) => includeSql(defs, rule, false, sources, access)), ...req.revincludes.map((rule) => includeSql(defs, rule, true, sources, access))];
  return steps.filter((s): s is Sql => s !== undefined);
}

/**
 * The query of one include rule from `sources` (rows in COLUMNS order), or undefined when the
 * rule cannot add anything (no source of its type, no reference parameter).
 */
export function includeSql(defs: FhirDefinitions, rule: IncludeRule, reverse: boolean, sources: IncludeSources, access?: AccessFilter): Sql | undefined {
  return reverse ? reverseIncludeSql(defs, rule, sources, access) : forwardIncludeSql(defs, rule, sources, access);
}

/**
 * Resolves `_include` and `_revinclude` (FHIR R4 3.1.1.5.4) for a page of matches, following
 * `:iterate` rules over newly added resources a few rounds deep. `firstRound`, when given, holds
 * what each rule (includes, then revincludes, in order) found from the matches, read already
 * with the page (firstRoundSql, in the page statement): only the `:iterate` rounds run here then.
 */
export async function resolveIncludes(
  db: Knex | Knex.Transaction,
  defs: FhirDefinitions,
  matches: StoredResource[],
  includes: IncludeRule[],
  revincludes: IncludeRule[],
  access?: AccessFilter,
  firstRound?: StoredResource[][],
): Promise<StoredResource[]> {
  if (matches.length === 0 || (includes.length === 0 && revincludes.length === 0)) return [];
  const seen = new Set(matches.map((m) => `${m.resourceType}/${m.id}`));
  const added: StoredResource[] = [];
  let frontier = matches;
  for (let round = 0; round < MAX_ITERATIONS && frontier.length > 0 && added.length < MAX_INCLUDED; round++) {
    const next: StoredResource[] = [];
    const take = (list: StoredResource[]) => {
      for (const r of list) {
        const key = `${r.resourceType}/${r.id}`;
        if (seen.has(key) || added.length >= MAX_INCLUDED) continue;
        seen.add(key);
        added.push(r);
        next.push(r);
      }
    };
    if (round === 0 && firstRound) {
      for (const list of firstRound) take(list);
    } else {
      const active = (rule: IncludeRule) => round === 0 || rule.iterate;
      const sources = boundSources(frontier);
      const steps = [...includes.filter(active).map((rule) => ({ rule, reverse: false })), ...revincludes.filter(active).map((rule) => ({ rule, reverse: true }))];
      for (const { rule, reverse } of steps) {
        const sql = includeSql(defs, rule, reverse, sources, access);
        if (sql) take((await queryRows(db, sql.sql, sql.bindings)).map(toStored));
      }
    }
    frontier = next;
  }
  return added;
}

function forwardIncludeSql(defs: FhirDefinitions, rule: IncludeRule, sources: IncludeSources, access?: AccessFilter): Sql | undefined {
  if (!sources.types.includes(rule.resourceType)) return undefined;
  const params = rule.wildcard ? referenceParams(defs, rule.resourceType) : [rule.param];
  if (params.length === 0) return undefined;
  const a = accessSql(access, 'r');
  const rids = sources.rids(rule.resourceType);
  // The targets' keys from the sources' reference rows ((rid, param) index), then the targets
  // by primary key.
  return {
    sql: `SELECT ${COLUMNS} FROM fhir_resource r
     WHERE (r.resource_type, r.id) IN (
       SELECT x.target_type, x.target_id FROM fhir_reference x
       WHERE x.rid = ANY(${rids.sql}) AND x.param = ANY(?::text[]) AND x.target_type IS NOT NULL ${rule.targetType ? 'AND x.target_type = ?' : ''})
     AND NOT r.deleted AND ${a.sql}
     LIMIT ?`,
    bindings: [...rids.bindings, params, ...(rule.targetType ? [rule.targetType] : []), ...a.bindings, MAX_INCLUDED],
  };
}

/** The reference search parameters of a resource type (what `Type:*` includes follow). */
function referenceParams(defs: FhirDefinitions, resourceType: string): string[] {
  return [...defs.searchParams(resourceType).values()].filter((p) => p.type === 'reference').map((p) => p.code);
}

function reverseIncludeSql(defs: FhirDefinitions, rule: IncludeRule, sources: IncludeSources, access?: AccessFilter): Sql | undefined {
  const types = rule.targetType ? sources.types.filter((t) => t === rule.targetType) : sources.types;
  if (types.length === 0) return undefined;
  const params = rule.wildcard ? referenceParams(defs, rule.resourceType) : [rule.param];
  if (params.length === 0) return undefined;
  // Per target type, `target_id = ANY(ids)` is an index condition of (resource_type, param,
  // target_id, target_type) whatever the statistics; a join against unnest() was planned as a
  // hash join over every reference row of the parameter when the statistics were stale (1.4 s
  // on 400,000 resources loaded since the last ANALYZE). The referring rids are collected
  // first, then fetched by rid (hash index).
  const targets = types.map((type) => {
    const ids = sources.ids(type);
    return { sql: `(x.target_type = ? AND x.target_id = ANY(${ids.sql}))`, bindings: [type, ...ids.bindings] };
  });
  const a = accessSql(access, 'r');
  return {
    sql: `SELECT ${COLUMNS} FROM fhir_resource r
     WHERE r.rid = ANY(ARRAY(
       SELECT x.rid FROM fhir_reference x
       WHERE x.resource_type = ? AND x.param = ANY(?::text[]) AND (${targets.map((t) => t.sql).join(' OR ')})))
     AND NOT r.deleted AND ${a.sql}
     ORDER BY r.rid LIMIT ?`,
    bindings: [rule.resourceType, params, ...targets.flatMap((t) => t.bindings), ...a.bindings, MAX_INCLUDED],
  };
}
