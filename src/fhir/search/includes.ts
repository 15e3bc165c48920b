import type { Knex } from 'knex';
import type { FhirDefinitions } from '../definitions';
import { accessSql, type AccessFilter } from '../store/access';
import { readByIds, toStored, type StoredResource } from '../store/resource-store';
import type { IncludeRule } from './search-request';
import { queryRows } from '../store/raw';

/** At most this many resources are added by _include/_revinclude to one page. */
export const MAX_INCLUDED = 1000;
const MAX_ITERATIONS = 4;

/**
 * Resolves `_include` and `_revinclude` (FHIR R4 3.1.1.5.4) for a page of matches, following
 * `:iterate` rules over newly added resources a few rounds deep.
 */
export async function resolveIncludes(
  db: Knex | Knex.Transaction,
  defs: FhirDefinitions,
  matches: StoredResource[],
  includes: IncludeRule[],
  revincludes: IncludeRule[],
  access?: AccessFilter,
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
    const active = (rule: IncludeRule) => round === 0 || rule.iterate;
    for (const rule of includes.filter(active)) take(await forwardInclude(db, defs, frontier, rule, access));
    for (const rule of revincludes.filter(active)) take(await reverseInclude(db, frontier, rule, access));
    frontier = next;
  }
  return added;
}

async function forwardInclude(
  db: Knex | Knex.Transaction,
  defs: FhirDefinitions,
  from: StoredResource[],
  rule: IncludeRule,
  access?: AccessFilter,
): Promise<StoredResource[]> {
  const sources = from.filter((r) => r.resourceType === rule.resourceType);
  if (sources.length === 0) return [];
  const params = rule.wildcard
    ? [...defs.searchParams(rule.resourceType).values()].filter((p) => p.type === 'reference').map((p) => p.code)
    : [rule.param];
  const rows = await queryRows(db, 
    `SELECT DISTINCT x.target_type, x.target_id FROM fhir_reference x
     WHERE x.rid = ANY(?::bigint[]) AND x.param = ANY(?::text[]) AND x.target_type IS NOT NULL ${rule.targetType ? 'AND x.target_type = ?' : ''}`,
    [sources.map((s) => s.rid), params, ...(rule.targetType ? [rule.targetType] : [])],
  );
  const refs = rows.map((row) => ({ resourceType: row.target_type, id: row.target_id }));
  return readByIds(db, refs.slice(0, MAX_INCLUDED), access);
}

async function reverseInclude(db: Knex | Knex.Transaction, targets: StoredResource[], rule: IncludeRule, access?: AccessFilter): Promise<StoredResource[]> {
  const eligible = rule.targetType ? targets.filter((t) => t.resourceType === rule.targetType) : targets;
  if (eligible.length === 0) return [];
  const a = accessSql(access, 'r');
  const paramSql = rule.wildcard ? '' : 'AND x.param = ?';
  const rows = await queryRows(db, 
    `SELECT r.rid, r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.content FROM fhir_resource r
     WHERE r.rid IN (
       SELECT x.rid FROM fhir_reference x JOIN unnest(?::text[], ?::text[]) AS k(t, i) ON x.target_id = k.i AND x.target_type = k.t
       WHERE x.resource_type = ? ${paramSql})
     AND NOT r.deleted AND ${a.sql}
     ORDER BY r.rid LIMIT ?`,
    [eligible.map((t) => t.resourceType), eligible.map((t) => t.id), rule.resourceType, ...(rule.wildcard ? [] : [rule.param]), ...a.bindings, MAX_INCLUDED],
  );
  return rows.map(toStored);
}
