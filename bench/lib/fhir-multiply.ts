import { Client } from 'pg';
import type { Resource } from '@medplum/fhirtypes';
import { loadFhirDefinitions } from '../../src/fhir/definitions';
import { extractIndexRows } from '../../src/fhir/store/index-rows';
import { MRN_SYSTEM } from './fhir-seed';

/**
 * Grows the FHIR store from the seed the engine wrote (Patients with their ImagingStudy and
 * Condition resources) to a million rows in SQL: copy k of every seed resource gets the id
 * `<seed id>-k`, its Patient references, Patient MRN and Study Instance UID suffixed the same
 * way, and the seed's history row and index rows with the same substitutions (rids assigned up
 * front from the table's own sequence). Everything else, codes, dates, laterality, is the
 * seed's, so the copy's index rows are exactly what the engine would write for its content;
 * `checkIndexConsistency` recomputes them with the engine's extractor to prove it.
 */

const TABLES: Record<string, string[]> = {
  fhir_token: ['system', 'code', 'text'],
  fhir_string: ['value', 'exact'],
  fhir_date: ['low', 'high'],
  fhir_number: ['low', 'high', 'system', 'code'],
  fhir_reference: ['target_type', 'target_id'],
  fhir_uri: ['value'],
};

/** The content of copy `k` (SQL over seed row `s`, plan row `p`). */
const COPY_CONTENT = `
  CASE s.resource_type
    WHEN 'Patient' THEN jsonb_set(jsonb_set(s.content, '{id}', to_jsonb(p.new_id)), '{identifier,0,value}', to_jsonb((s.content->'identifier'->0->>'value') || '-' || p.k))
    WHEN 'ImagingStudy' THEN jsonb_set(jsonb_set(jsonb_set(s.content, '{id}', to_jsonb(p.new_id)), '{subject,reference}', to_jsonb((s.content->'subject'->>'reference') || '-' || p.k)),
                                       '{identifier,0,value}', to_jsonb((s.content->'identifier'->0->>'value') || '.' || p.k))
    ELSE jsonb_set(jsonb_set(s.content, '{id}', to_jsonb(p.new_id)), '{subject,reference}', to_jsonb((s.content->'subject'->>'reference') || '-' || p.k))
  END`;

/** The index columns of copy `k` for each table (x = seed index row). */
const COPY_COLUMNS: Record<string, string> = {
  fhir_token: `x.system,
    CASE WHEN x.param = 'identifier' AND x.system = '${MRN_SYSTEM}' THEN x.code || '-' || p.k
         WHEN x.param = 'identifier' AND x.system = 'urn:dicom:uid' THEN x.code || '.' || p.k
         ELSE x.code END,
    x.text`,
  fhir_string: 'x.value, x.exact',
  fhir_date: 'x.low, x.high',
  fhir_number: 'x.low, x.high, x.system, x.code',
  fhir_reference: `x.target_type, CASE WHEN x.target_type = 'Patient' THEN x.target_id || '-' || p.k ELSE x.target_id END`,
  fhir_uri: 'x.value',
};

/** What the multiplication did. */
export interface MultiplyResult {
  copies: number;
  resources: number;
  indexRows: number;
  seconds: number;
}

/** Makes copies 1..copies-1 of the seed (copy 0); `log` gets progress lines. */
export async function multiplySeed(databaseUrl: string, copies: number, log: (line: string) => void): Promise<MultiplyResult> {
  const c = new Client({ connectionString: databaseUrl });
  await c.connect();
  const t0 = performance.now();
  let resources = 0;
  let indexRows = 0;
  try {
    await c.query(`CREATE TEMP TABLE seed AS SELECT rid, resource_type, id, last_updated, content FROM fhir_resource
                   WHERE resource_type IN ('Patient', 'ImagingStudy', 'Condition') AND NOT deleted`);
    await c.query('CREATE INDEX ON seed (rid)');
    const seedCount = Number((await c.query('SELECT count(*) AS n FROM seed')).rows[0].n);
    for (const table of Object.keys(TABLES)) {
      await c.query(`CREATE TEMP TABLE seed_${table} AS SELECT x.* FROM ${table} x JOIN seed s ON s.rid = x.rid`);
      await c.query(`CREATE INDEX ON seed_${table} (rid)`);
    }
    await c.query('CREATE TEMP TABLE plan (seed_rid bigint, k int, new_rid bigint, new_id text)');
    const perBatch = Math.max(1, Math.floor(200_000 / seedCount));
    for (let from = 1; from < copies; from += perBatch) {
      const to = Math.min(copies - 1, from + perBatch - 1);
      await c.query('BEGIN');
      await c.query('TRUNCATE plan');
      await c.query(
        `INSERT INTO plan SELECT s.rid, k, nextval(pg_get_serial_sequence('fhir_resource', 'rid')), s.id || '-' || k
         FROM seed s, generate_series($1::int, $2::int) AS k ORDER BY k, s.rid`,
        [from, to],
      );
      const inserted = await c.query(
        `INSERT INTO fhir_resource (rid, resource_type, id, version_id, last_updated, deleted, content)
         SELECT p.new_rid, s.resource_type, p.new_id, 1, s.last_updated, false, ${COPY_CONTENT}
         FROM plan p JOIN seed s ON s.rid = p.seed_rid ORDER BY p.new_rid`,
      );
      resources += inserted.rowCount ?? 0;
      await c.query(
        `INSERT INTO fhir_resource_history (rid, version_id, resource_type, id, last_updated, method, deleted, content)
         SELECT p.new_rid, 1, s.resource_type, p.new_id, s.last_updated, 'POST', false, ${COPY_CONTENT}
         FROM plan p JOIN seed s ON s.rid = p.seed_rid`,
      );
      for (const [table, columns] of Object.entries(TABLES)) {
        const r = await c.query(
          `INSERT INTO ${table} (rid, resource_type, param, ${columns.join(', ')})
           SELECT p.new_rid, x.resource_type, x.param, ${COPY_COLUMNS[table]}
           FROM plan p JOIN seed_${table} x ON x.rid = p.seed_rid`,
        );
        indexRows += r.rowCount ?? 0;
      }
      await c.query('COMMIT');
      log(`copies ${from}..${to} of ${copies - 1}: ${resources.toLocaleString('en-US')} resources, ${indexRows.toLocaleString('en-US')} index rows, ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    }
    log('VACUUM ANALYZE');
    for (const table of ['fhir_resource', 'fhir_resource_history', ...Object.keys(TABLES)]) await c.query(`VACUUM (ANALYZE) ${table}`);
  } finally {
    await c.end();
  }
  return { copies, resources, indexRows, seconds: (performance.now() - t0) / 1000 };
}

/** Result of recomputing index rows for a sample. */
export interface ConsistencyResult {
  checked: number;
  mismatches: string[];
}

/**
 * Recomputes the index rows of `sample` random copied resources and `sample` seed resources with
 * the engine's extractor and compares them with the stored rows (as multisets).
 */
export async function checkIndexConsistency(databaseUrl: string, sample: number): Promise<ConsistencyResult> {
  const defs = loadFhirDefinitions();
  const c = new Client({ connectionString: databaseUrl });
  await c.connect();
  const mismatches: string[] = [];
  let checked = 0;
  try {
    const picks = (
      await c.query(
        `(SELECT rid, resource_type, id, content FROM fhir_resource TABLESAMPLE SYSTEM (1) WHERE id ~ '^[0-9a-f-]{36}-[0-9]+$' LIMIT $1)
         UNION ALL (SELECT rid, resource_type, id, content FROM fhir_resource WHERE id ~ '^[0-9a-f-]{36}$' LIMIT $1)`,
        [sample],
      )
    ).rows;
    for (const row of picks) {
      checked++;
      const expected = extractIndexRows(defs, row.content as Resource);
      const stored: Record<string, string[]> = {};
      const computed: Record<string, string[]> = {
        fhir_token: expected.token.map((r) => key(r.param, r.system, r.code, r.text)),
        fhir_string: expected.string.map((r) => key(r.param, r.value, r.exact)),
        fhir_date: expected.date.map((r) => key(r.param, r.low, r.high)),
        fhir_number: expected.number.map((r) => key(r.param, num(r.low), num(r.high), r.system, r.code)),
        fhir_reference: expected.reference.map((r) => key(r.param, r.targetType, r.targetId)),
        fhir_uri: expected.uri.map((r) => key(r.param, r.value)),
      };
      for (const [table, columns] of Object.entries(TABLES)) {
        const rows = (await c.query(`SELECT param, ${columns.join(', ')} FROM ${table} WHERE rid = $1`, [row.rid])).rows;
        stored[table] = rows.map((r) => key(r.param, ...columns.map((col) => (table === 'fhir_date' ? ts(r[col]) : table === 'fhir_number' && (col === 'low' || col === 'high') ? num(r[col]) : r[col]))));
        const a = [...stored[table]].sort().join('\n');
        const b = [...computed[table]].sort().join('\n');
        if (a !== b) mismatches.push(`${row.resource_type}/${row.id} ${table}: stored [${stored[table].length}] vs computed [${computed[table].length}]`);
      }
    }
  } finally {
    await c.end();
  }
  return { checked, mismatches };
}

const key = (...parts: unknown[]) => parts.map((p) => (p === null || p === undefined ? '∅' : String(p))).join('|');
const num = (v: unknown) => (v === null || v === undefined ? null : String(Number(v)));
function ts(v: unknown): string {
  if (v === Number.POSITIVE_INFINITY || v === 'infinity') return 'infinity';
  if (v === Number.NEGATIVE_INFINITY || v === '-infinity') return '-infinity';
  return new Date(v as string).toISOString();
}
