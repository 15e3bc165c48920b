import type { Knex } from 'knex';
import type { Resource } from '@medplum/fhirtypes';
import type { FhirDefinitions } from '../definitions';
import { extractIndexRows, type IndexRows } from './index-rows';
import { diffIndexRows, INDEX_TABLES, readIndexRowsSql, type IndexTable, type StoredIndexRow } from './index-diff';
import type { StoredResource } from './resource-store';
import { queryRows } from './raw';

/**
 * Writes resources with their history and index rows. Writes are prepared in memory first and
 * then applied together: resources and history in one statement per kind, index rows in one
 * statement (INSERT ... SELECT FROM json_to_recordset), so a transaction Bundle of hundreds of
 * resources costs a handful of round trips.
 */
export interface PendingWrite {
  resourceType: string;
  id: string;
  /** Row of the current version, when the resource existed before. */
  rid?: string;
  versionId: number;
  lastUpdated: string;
  method: 'POST' | 'PUT' | 'DELETE';
  deleted: boolean;
  content: Resource | null;
  rows: IndexRows | null;
}

/** Prepares a create or update: assigns version and meta, computes index rows. */
export function prepareWrite(defs: FhirDefinitions, resource: Resource, existing: StoredResource | undefined, method: 'POST' | 'PUT', now: Date): PendingWrite {
  const versionId = existing ? existing.versionId + 1 : 1;
  const lastUpdated = now.toISOString();
  const content = { ...resource, meta: { ...resource.meta, versionId: String(versionId), lastUpdated } } as Resource;
  return {
    resourceType: resource.resourceType,
    id: resource.id as string,
    rid: existing?.rid,
    versionId,
    lastUpdated,
    method,
    deleted: false,
    content,
    rows: extractIndexRows(defs, content),
  };
}

/** Prepares a delete of an existing, not yet deleted resource. */
export function prepareDelete(existing: StoredResource, now: Date): PendingWrite {
  return {
    resourceType: existing.resourceType,
    id: existing.id,
    rid: existing.rid,
    versionId: existing.versionId + 1,
    lastUpdated: now.toISOString(),
    method: 'DELETE',
    deleted: true,
    content: null,
    rows: null,
  };
}

type Column = [name: string, pgType: string];

const KEY: Column[] = [['rid', 'bigint'], ['resource_type', 'text'], ['param', 'text']];
const COLUMNS: Record<IndexTable, Column[]> = {
  fhir_token: [...KEY, ['system', 'text'], ['code', 'text'], ['text', 'text']],
  fhir_string: [...KEY, ['value', 'text'], ['exact', 'text']],
  fhir_date: [...KEY, ['low', 'timestamptz'], ['high', 'timestamptz']],
  fhir_number: [...KEY, ['low', 'numeric'], ['high', 'numeric'], ['system', 'text'], ['code', 'text']],
  fhir_reference: [...KEY, ['target_type', 'text'], ['target_id', 'text']],
  fhir_uri: [...KEY, ['value', 'text']],
};

/**
 * Applies prepared writes in the caller's transaction: current rows and history rows in one
 * statement per kind (the content is sent once; the history row is copied from the written
 * row), then every index change in ONE statement. An update writes only the index rows that
 * changed (index-diff.ts); a delete drops all rows of the resource.
 */
export async function applyWrites(trx: Knex.Transaction, writes: PendingWrite[]): Promise<void> {
  if (writes.length === 0) return;
  const inserts = writes.filter((w) => !w.rid);
  const updates = writes.filter((w) => w.rid);

  if (inserts.length > 0) {
    const input = inserts.map((w) => ({ t: w.resourceType, i: w.id, v: w.versionId, lu: w.lastUpdated, m: w.method, c: w.content }));
    const rows = await queryRows<{ rid: string; resource_type: string; id: string }>(
      trx,
      `WITH input AS (
         SELECT * FROM json_to_recordset(?::json) AS x(t text, i text, v int, lu timestamptz, m text, c json)
       ), ins AS (
         INSERT INTO fhir_resource (resource_type, id, version_id, last_updated, deleted, content)
         SELECT t, i, v, lu, false, c::jsonb FROM input
         RETURNING rid, resource_type, id, version_id, last_updated, content
       )
       INSERT INTO fhir_resource_history (rid, version_id, resource_type, id, last_updated, method, deleted, content)
       SELECT ins.rid, ins.version_id, ins.resource_type, ins.id, ins.last_updated, input.m, false, ins.content
       FROM ins JOIN input ON input.t = ins.resource_type AND input.i = ins.id
       RETURNING rid, resource_type, id`,
      [JSON.stringify(input)],
    );
    const byKey = new Map<string, string>(rows.map((r) => [`${r.resource_type}/${r.id}`, String(r.rid)]));
    for (const w of inserts) w.rid = byKey.get(`${w.resourceType}/${w.id}`);
  }
  const changes: IndexChanges = { stale: new Map(), removedRids: [], fresh: [] };
  for (const w of inserts) if (w.rows) changes.fresh.push({ w, rows: w.rows });
  if (updates.length > 0) {
    const input = updates.map((w) => ({ r: w.rid, v: w.versionId, lu: w.lastUpdated, d: w.deleted, m: w.method, c: w.content }));
    await queryRows(
      trx,
      `WITH input AS (
         SELECT * FROM json_to_recordset(?::json) AS x(r bigint, v int, lu timestamptz, d boolean, m text, c json)
       ), upd AS (
         UPDATE fhir_resource f SET version_id = input.v, last_updated = input.lu, deleted = input.d, content = input.c::jsonb
         FROM input WHERE f.rid = input.r
         RETURNING f.rid, f.version_id, f.resource_type, f.id, f.last_updated, f.deleted, f.content
       )
       INSERT INTO fhir_resource_history (rid, version_id, resource_type, id, last_updated, method, deleted, content)
       SELECT upd.rid, upd.version_id, upd.resource_type, upd.id, upd.last_updated, input.m, upd.deleted, upd.content
       FROM upd JOIN input ON input.r = upd.rid`,
      [JSON.stringify(input)],
    );
    const replaced = updates.filter((w) => w.rows);
    changes.removedRids = updates.filter((w) => !w.rows).map((w) => w.rid as string);
    if (replaced.length > 0) {
      const rids = replaced.map((w) => w.rid as string);
      const stored = await queryRows<StoredIndexRow>(trx, readIndexRowsSql, INDEX_TABLES.map(() => rids));
      const diff = diffIndexRows(stored, new Map(replaced.map((w) => [w.rid as string, w.rows as IndexRows])));
      changes.stale = diff.stale;
      for (const w of replaced) changes.fresh.push({ w, rows: diff.fresh.get(w.rid as string) as IndexRows });
    }
  }
  await applyIndexChanges(trx, changes);
}

interface IndexChanges {
  /** ctids of stored rows to delete, per table. */
  stale: Map<IndexTable, string[]>;
  /** Resources deleted: all their rows go. */
  removedRids: string[];
  /** Rows to insert. */
  fresh: Array<{ w: PendingWrite; rows: IndexRows }>;
}

/**
 * All index deletes and inserts as one statement of data-modifying CTEs (they all see the same
 * snapshot, which is what we want: the deletes target old rows only). Each insert sends its
 * rows as one JSON parameter (json_to_recordset), cheaper than one array literal per column.
 */
async function applyIndexChanges(trx: Knex.Transaction, changes: IndexChanges): Promise<void> {
  const parts: string[] = [];
  const bindings: unknown[] = [];
  for (const [table, ctids] of changes.stale) {
    parts.push(`DELETE FROM ${table} WHERE ctid = ANY(?::tid[])`);
    bindings.push(ctids);
  }
  if (changes.removedRids.length > 0) {
    for (const table of INDEX_TABLES) {
      parts.push(`DELETE FROM ${table} WHERE rid = ANY(?::bigint[])`);
      bindings.push(changes.removedRids);
    }
  }
  const rowsOf = flattenIndexRows(changes.fresh);
  for (const table of INDEX_TABLES) {
    const rows = rowsOf[table];
    if (rows.length === 0) continue;
    const names = COLUMNS[table].map(([n]) => n).join(', ');
    const defs = COLUMNS[table].map(([n, t]) => `${n} ${t}`).join(', ');
    parts.push(`INSERT INTO ${table} (${names}) SELECT ${names} FROM json_to_recordset(?::json) AS x(${defs})`);
    bindings.push(JSON.stringify(rows));
  }
  if (parts.length === 0) return;
  if (parts.length === 1) {
    await queryRows(trx, parts[0], bindings);
    return;
  }
  await queryRows(trx, `WITH ${parts.map((p, i) => `s${i} AS (${p})`).join(',\n')} SELECT 1`, bindings);
}

function flattenIndexRows(fresh: IndexChanges['fresh']): Record<IndexTable, Record<string, unknown>[]> {
  const out: Record<IndexTable, Record<string, unknown>[]> = { fhir_token: [], fhir_string: [], fhir_date: [], fhir_number: [], fhir_reference: [], fhir_uri: [] };
  for (const { w, rows } of fresh) {
    const rid = w.rid;
    const resource_type = w.resourceType;
    for (const r of rows.token) out.fhir_token.push({ rid, resource_type, param: r.param, system: r.system, code: r.code, text: r.text });
    for (const r of rows.string) out.fhir_string.push({ rid, resource_type, param: r.param, value: r.value, exact: r.exact });
    for (const r of rows.date) out.fhir_date.push({ rid, resource_type, param: r.param, low: r.low, high: r.high });
    for (const r of rows.number) out.fhir_number.push({ rid, resource_type, param: r.param, low: r.low, high: r.high, system: r.system, code: r.code });
    for (const r of rows.reference) out.fhir_reference.push({ rid, resource_type, param: r.param, target_type: r.targetType, target_id: r.targetId });
    for (const r of rows.uri) out.fhir_uri.push({ rid, resource_type, param: r.param, value: r.value });
  }
  return out;
}
