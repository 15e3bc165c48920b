import type { Knex } from 'knex';
import type { Resource } from '@medplum/fhirtypes';
import type { FhirDefinitions } from '../definitions';
import { extractIndexRows, type IndexRows } from './index-rows';
import type { StoredResource } from './resource-store';
import { queryRows } from './raw';

/**
 * Writes resources with their history and index rows. Writes are prepared in memory first and
 * then applied together, one multi-row statement per table (INSERT ... SELECT FROM unnest), so
 * a transaction Bundle of hundreds of resources costs a handful of round trips.
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

/**
 * Multi-row insert from one JSON parameter (json_to_recordset): the rows travel as a single
 * JSON text that PostgreSQL parses natively, cheaper than one array literal per column.
 */
async function insertRecordset(trx: Knex.Transaction, table: string, columns: Column[], rows: Record<string, unknown>[]): Promise<void> {
  if (rows.length === 0) return;
  const names = columns.map(([n]) => n).join(', ');
  const defs = columns.map(([n, t]) => `${n} ${t}`).join(', ');
  await queryRows(trx, `INSERT INTO ${table} (${names}) SELECT ${names} FROM json_to_recordset(?::json) AS x(${defs})`, [JSON.stringify(rows)]);
}

const INDEX_TABLES = ['fhir_token', 'fhir_string', 'fhir_date', 'fhir_number', 'fhir_reference', 'fhir_uri'];

/**
 * Applies prepared writes in the caller's transaction: current rows and history rows in one
 * statement per kind (the content is sent once; the history row is copied from the written
 * row), then the index rows, one statement per index table.
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
    const rids = updates.map((w) => w.rid);
    for (const table of INDEX_TABLES) await queryRows(trx, `DELETE FROM ${table} WHERE rid = ANY(?::bigint[])`, [rids]);
  }
  await insertIndexRows(trx, writes);
}

async function insertIndexRows(trx: Knex.Transaction, writes: PendingWrite[]): Promise<void> {
  const token: Record<string, unknown>[] = [];
  const string: Record<string, unknown>[] = [];
  const date: Record<string, unknown>[] = [];
  const number: Record<string, unknown>[] = [];
  const reference: Record<string, unknown>[] = [];
  const uri: Record<string, unknown>[] = [];
  for (const w of writes) {
    if (!w.rows) continue;
    const rid = w.rid;
    const resource_type = w.resourceType;
    for (const r of w.rows.token) token.push({ rid, resource_type, param: r.param, system: r.system, code: r.code, text: r.text });
    for (const r of w.rows.string) string.push({ rid, resource_type, param: r.param, value: r.value, exact: r.exact });
    for (const r of w.rows.date) date.push({ rid, resource_type, param: r.param, low: r.low, high: r.high });
    for (const r of w.rows.number) number.push({ rid, resource_type, param: r.param, low: r.low, high: r.high, system: r.system, code: r.code });
    for (const r of w.rows.reference) reference.push({ rid, resource_type, param: r.param, target_type: r.targetType, target_id: r.targetId });
    for (const r of w.rows.uri) uri.push({ rid, resource_type, param: r.param, value: r.value });
  }
  const key: Column[] = [['rid', 'bigint'], ['resource_type', 'text'], ['param', 'text']];
  await insertRecordset(trx, 'fhir_token', [...key, ['system', 'text'], ['code', 'text'], ['text', 'text']], token);
  await insertRecordset(trx, 'fhir_string', [...key, ['value', 'text'], ['exact', 'text']], string);
  await insertRecordset(trx, 'fhir_date', [...key, ['low', 'timestamptz'], ['high', 'timestamptz']], date);
  await insertRecordset(trx, 'fhir_number', [...key, ['low', 'numeric'], ['high', 'numeric'], ['system', 'text'], ['code', 'text']], number);
  await insertRecordset(trx, 'fhir_reference', [...key, ['target_type', 'text'], ['target_id', 'text']], reference);
  await insertRecordset(trx, 'fhir_uri', [...key, ['value', 'text']], uri);
}
