import type { Knex } from 'knex';
import type { Resource } from '@medplum/fhirtypes';
import { accessSql, type AccessFilter } from './access';
import { queryRows } from './raw';
import { queryPrepared } from '../../db/prepared-statement';

/** One row of the current-version table (or of the history table). */
export interface StoredResource {
  rid: string;
  resourceType: string;
  id: string;
  versionId: number;
  lastUpdated: Date;
  deleted: boolean;
  content: Resource | null;
  method?: string;
}

type Db = Knex | Knex.Transaction;

/**
 * jsonb keeps keys in its own order; put resourceType, id and meta first again, as FHIR JSON
 * is conventionally written (FHIR R4 json 2.6.2).
 */
function fhirKeyOrder(content: Resource | null): Resource | null {
  if (!content) return content;
  const { resourceType, id, meta, ...rest } = content as Resource & Record<string, unknown>;
  return { resourceType, ...(id !== undefined ? { id } : {}), ...(meta !== undefined ? { meta } : {}), ...rest } as Resource;
}

/** Maps a fhir_resource or fhir_resource_history row. */
export function toStored(row: Record<string, any>): StoredResource {
  return {
    rid: String(row.rid),
    resourceType: row.resource_type,
    id: row.id,
    versionId: Number(row.version_id),
    lastUpdated: row.last_updated instanceof Date ? row.last_updated : new Date(row.last_updated),
    deleted: Boolean(row.deleted),
    content: fhirKeyOrder(typeof row.content === 'string' ? JSON.parse(row.content) : (row.content ?? null)),
    method: row.method,
  };
}

const COLUMNS = 'r.rid, r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.content';

/**
 * The current version of a resource (deleted ones included, flagged), optionally locked for update.
 * A look-up by primary key, and every FHIR read passes here: a named prepared statement (one text
 * per access filter shape, the project ids a parameter), so PostgreSQL keeps one plan instead of
 * planning the key look-up and the project filter's semi-join on each read (measured on
 * PostgreSQL 15: backend CPU per restricted read 207 -> 53 µs, unrestricted 100 -> 40 µs; Node.js
 * CPU 169 -> 86 µs without knex's query pipeline).
 */
export async function readCurrent(
  db: Db,
  resourceType: string,
  id: string,
  options: { access?: AccessFilter; forUpdate?: boolean } = {},
): Promise<StoredResource | undefined> {
  const a = accessSql(options.access, 'r');
  const rows = await queryPrepared(
    db,
    `SELECT ${COLUMNS} FROM fhir_resource r WHERE r.resource_type = ? AND r.id = ? AND ${a.sql}${options.forUpdate ? ' FOR UPDATE' : ''}`,
    [resourceType, id, ...a.bindings],
  );
  return rows[0] ? toStored(rows[0]) : undefined;
}

/** Current, non-deleted resources by rid, in the order asked. */
export async function readByRids(db: Db, rids: string[], access?: AccessFilter): Promise<StoredResource[]> {
  if (rids.length === 0) return [];
  const a = accessSql(access, 'r');
  const rows = await queryRows(db, `SELECT ${COLUMNS} FROM fhir_resource r WHERE r.rid = ANY(?::bigint[]) AND NOT r.deleted AND ${a.sql}`, [rids, ...a.bindings]);
  const byRid = new Map<string, StoredResource>(rows.map((r: Record<string, any>) => [String(r.rid), toStored(r)]));
  return rids.map((rid) => byRid.get(rid)).filter((r): r is StoredResource => !!r);
}

/** Current, non-deleted resources by type and ids. */
export async function readByIds(db: Db, refs: Array<{ resourceType: string; id: string }>, access?: AccessFilter): Promise<StoredResource[]> {
  if (refs.length === 0) return [];
  const a = accessSql(access, 'r');
  const rows = await queryRows(db, 
    `SELECT ${COLUMNS} FROM fhir_resource r
     JOIN unnest(?::text[], ?::text[]) AS k(t, i) ON r.resource_type = k.t AND r.id = k.i
     WHERE NOT r.deleted AND ${a.sql}`,
    [refs.map((r) => r.resourceType), refs.map((r) => r.id), ...a.bindings],
  );
  return rows.map(toStored);
}

/** One version of a resource from the history table. */
export async function readVersion(db: Db, resourceType: string, id: string, versionId: number, access?: AccessFilter): Promise<StoredResource | undefined> {
  const a = accessSql(access, 'r');
  const rows = await queryRows(db, 
    `SELECT h.rid, h.resource_type, h.id, h.version_id, h.last_updated, h.deleted, h.content, h.method
     FROM fhir_resource_history h JOIN fhir_resource r ON r.rid = h.rid
     WHERE r.resource_type = ? AND r.id = ? AND h.version_id = ? AND ${a.sql}`,
    [resourceType, id, versionId, ...a.bindings],
  );
  return rows[0] ? toStored(rows[0]) : undefined;
}

/** What a history interaction asks for (FHIR R4 http 3.1.0.9). */
export interface HistoryQuery {
  resourceType?: string;
  id?: string;
  since?: Date;
  at?: Date;
  count: number;
  offset: number;
  access?: AccessFilter;
}

/** Versions newest first; fetches one more than `count` so the caller knows whether a next page exists. */
export async function readHistory(db: Db, q: HistoryQuery): Promise<StoredResource[]> {
  const where: string[] = [];
  const bindings: unknown[] = [];
  if (q.resourceType && q.id) {
    where.push('h.rid = (SELECT rid FROM fhir_resource WHERE resource_type = ? AND id = ?)');
    bindings.push(q.resourceType, q.id);
  } else if (q.resourceType) {
    where.push('h.resource_type = ?');
    bindings.push(q.resourceType);
  }
  if (q.since) {
    where.push('h.last_updated >= ?');
    bindings.push(q.since.toISOString());
  }
  if (q.at) {
    where.push('h.last_updated <= ?');
    bindings.push(q.at.toISOString());
  }
  const a = accessSql(q.access, 'r');
  const join = q.access ? 'JOIN fhir_resource r ON r.rid = h.rid' : '';
  if (q.access) {
    where.push(a.sql);
    bindings.push(...a.bindings);
  }
  const rows = await queryRows(db, 
    `SELECT h.rid, h.resource_type, h.id, h.version_id, h.last_updated, h.deleted, h.content, h.method
     FROM fhir_resource_history h ${join}
     ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
     ORDER BY h.last_updated DESC, h.rid DESC, h.version_id DESC
     LIMIT ? OFFSET ?`,
    [...bindings, q.count + 1, q.offset],
  );
  return rows.map(toStored);
}
