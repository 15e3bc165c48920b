import type { IndexRows } from './index-rows';

/**
 * Differences between the search-index rows stored for a resource and the rows of its new
 * version, so an update rewrites only what changed: a STOW into a 2,000-instance study changes
 * a handful of the ImagingStudy's ~4,000 rows, not all of them. Rows are compared by their
 * values rendered as text (see {@link INDEX_TABLES}); a value that renders differently on the
 * two sides (e.g. a number written as 1e21) only costs a delete and a re-insert of the same row,
 * never a stale row, because stale rows are deleted by their physical row id (ctid).
 */

/** The index tables, in the order of their `t` tag in {@link readIndexRowsSql}. */
export const INDEX_TABLES = ['fhir_token', 'fhir_string', 'fhir_date', 'fhir_number', 'fhir_reference', 'fhir_uri'] as const;
export type IndexTable = (typeof INDEX_TABLES)[number];

/** Which IndexRows list each table holds, and how many value columns after `param` it compares. */
const KINDS: ReadonlyArray<{ kind: keyof IndexRows; width: number }> = [
  { kind: 'token', width: 3 },
  { kind: 'string', width: 2 },
  { kind: 'date', width: 2 },
  { kind: 'number', width: 4 },
  { kind: 'reference', width: 2 },
  { kind: 'uri', width: 1 },
];

/** One stored index row as read by {@link readIndexRowsSql}: table tag, ctid, rid, param, values as text. */
export interface StoredIndexRow {
  t: number;
  c: string;
  r: string;
  p: string;
  a: string | null;
  b: string | null;
  d: string | null;
  e: string | null;
}

/** Renders a timestamptz column as the writer's toTimestamp() does (ISO 8601 in UTC with ms, or ±infinity). */
const ts = (col: string) => `CASE WHEN isfinite(${col}) THEN to_char(${col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') ELSE ${col}::text END`;

/**
 * One statement reading every index row of the given rids (bind the rid array six times), with
 * its ctid so the stale ones can be deleted exactly. Run it with the resource rows locked.
 */
export const readIndexRowsSql = [
  `SELECT 0 AS t, ctid::text AS c, rid::text AS r, param AS p, system AS a, code AS b, text AS d, NULL::text AS e FROM fhir_token WHERE rid = ANY(?::bigint[])`,
  `SELECT 1, ctid::text, rid::text, param, value, exact, NULL, NULL FROM fhir_string WHERE rid = ANY(?::bigint[])`,
  `SELECT 2, ctid::text, rid::text, param, ${ts('low')}, ${ts('high')}, NULL, NULL FROM fhir_date WHERE rid = ANY(?::bigint[])`,
  `SELECT 3, ctid::text, rid::text, param, low::text, high::text, system, code FROM fhir_number WHERE rid = ANY(?::bigint[])`,
  `SELECT 4, ctid::text, rid::text, param, target_type, target_id, NULL, NULL FROM fhir_reference WHERE rid = ANY(?::bigint[])`,
  `SELECT 5, ctid::text, rid::text, param, value, NULL, NULL, NULL FROM fhir_uri WHERE rid = ANY(?::bigint[])`,
].join('\nUNION ALL ');

function keyOf(table: number, rid: string, values: ReadonlyArray<string | null>): string {
  return JSON.stringify([table, rid, ...values]);
}

/** The compared values of a new row, in the column order of {@link readIndexRowsSql}. */
function valuesOf(kind: keyof IndexRows, row: Record<string, unknown>): Array<string | null> {
  const text = (v: unknown) => (v === null || v === undefined ? null : String(v));
  switch (kind) {
    case 'token':
      return [text(row.param), text(row.system), text(row.code), text(row.text)];
    case 'string':
      return [text(row.param), text(row.value), text(row.exact)];
    case 'date':
      return [text(row.param), text(row.low), text(row.high)];
    case 'number':
      return [text(row.param), text(row.low), text(row.high), text(row.system), text(row.code)];
    case 'reference':
      return [text(row.param), text(row.targetType), text(row.targetId)];
    case 'uri':
      return [text(row.param), text(row.value)];
  }
}

/** What an update must change in the index tables. */
export interface IndexDiff {
  /** ctids of stored rows to delete, per table. */
  stale: Map<IndexTable, string[]>;
  /** Rows to insert, per rid (only the ones not already stored). */
  fresh: Map<string, IndexRows>;
}

/**
 * Compares the stored rows of some resources with their new rows (by rid) in one pass. Stored
 * duplicates beyond the first are stale too.
 */
export function diffIndexRows(stored: StoredIndexRow[], next: Map<string, IndexRows>): IndexDiff {
  const byKey = new Map<string, { t: number; ctids: string[] }>();
  for (const s of stored) {
    const key = keyOf(s.t, s.r, [s.p, s.a, s.b, s.d, s.e].slice(0, KINDS[s.t].width + 1));
    const entry = byKey.get(key);
    if (entry) entry.ctids.push(s.c);
    else byKey.set(key, { t: s.t, ctids: [s.c] });
  }
  const fresh = new Map<string, IndexRows>();
  for (const [rid, rows] of next) {
    const out: IndexRows = { token: [], string: [], date: [], number: [], reference: [], uri: [] };
    KINDS.forEach(({ kind }, t) => {
      for (const row of rows[kind] as unknown as Array<Record<string, unknown>>) {
        const entry = byKey.get(keyOf(t, rid, valuesOf(kind, row)));
        if (entry && entry.ctids.length > 0) entry.ctids.pop();
        else (out[kind] as unknown[]).push(row);
      }
    });
    fresh.set(rid, out);
  }
  // Whatever stored row no new row claimed is stale.
  const stale = new Map<IndexTable, string[]>();
  for (const { t, ctids } of byKey.values()) {
    if (ctids.length === 0) continue;
    const table = INDEX_TABLES[t];
    const list = stale.get(table);
    if (list) list.push(...ctids);
    else stale.set(table, [...ctids]);
  }
  return { stale, fresh };
}
