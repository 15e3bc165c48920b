import request from 'supertest';
import { withTransaction } from '../../../src/db/database';
import { loadFhirDefinitions } from '../../../src/fhir/definitions';
import { extractIndexRows } from '../../../src/fhir/store/index-rows';
import { writeResourceInTransaction } from '../../../src/fhir/write-resource';
import { startFhirTestApp, uniq, type FhirTestApp } from './helpers/fhir-app';

/**
 * An update rewrites only the search-index rows that changed (src/fhir/store/index-diff.ts):
 * rows that stay keep their physical row (ctid), removed ones go, new ones appear, and the
 * stored rows always equal what the extractor makes of the current version.
 */
describe('index rows on update', () => {
  let f: FhirTestApp;
  const knex = () => f.t.app.db.knex;
  const defs = loadFhirDefinitions();

  const study = (id: string, instances: number, status: 'available' | 'registered' = 'available') => ({
    resourceType: 'ImagingStudy' as const,
    id,
    identifier: [{ system: 'urn:dicom:uid', value: `urn:oid:1.2.826.0.1.${id.length}` }],
    status,
    subject: { reference: 'Patient/p1' },
    started: '2024-05-01T10:00:00Z',
    series: [
      {
        uid: '1.2.3.4',
        modality: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: 'OPT' },
        instance: Array.from({ length: instances }, (_, i) => ({ uid: `1.2.3.4.${i + 1}`, sopClass: { system: 'urn:ietf:rfc:3986', code: 'urn:oid:1.2.840.10008.5.1.4.1.1.77.1.5.4' }, number: i + 1 })),
      },
    ],
  });

  /** Every index row of a resource as "table|values" with its ctid. */
  async function storedRows(resourceType: string, id: string): Promise<Array<{ key: string; ctid: string }>> {
    const res = await knex().raw(
      `SELECT r.rid FROM fhir_resource r WHERE r.resource_type = ? AND r.id = ?`,
      [resourceType, id],
    );
    const rid = res.rows[0].rid;
    const out: Array<{ key: string; ctid: string }> = [];
    const tables: Record<string, string> = {
      fhir_token: `concat_ws('|', param, system, code, text)`,
      fhir_string: `concat_ws('|', param, value, exact)`,
      fhir_date: `concat_ws('|', param, low::text, high::text)`,
      fhir_number: `concat_ws('|', param, low::text, high::text, system, code)`,
      fhir_reference: `concat_ws('|', param, target_type, target_id)`,
      fhir_uri: `concat_ws('|', param, value)`,
    };
    for (const [table, expr] of Object.entries(tables)) {
      const rows = await knex().raw(`SELECT ctid::text AS ctid, ${expr} AS k FROM ${table} WHERE rid = ?`, [rid]);
      for (const r of rows.rows) out.push({ key: `${table}|${r.k}`, ctid: r.ctid });
    }
    return out;
  }

  /** How many rows of each table the extractor makes of a resource. */
  function expectedCounts(resource: any): number {
    const rows = extractIndexRows(defs, resource);
    return Object.values(rows).reduce((n, list) => n + list.length, 0);
  }

  const write = (resource: any) => withTransaction(knex(), (trx) => writeResourceInTransaction(trx, resource));

  beforeAll(async () => {
    f = await startFhirTestApp();
  }, 120_000);
  afterAll(async () => {
    await f.close();
  });

  test('adding one instance to a 300-instance study inserts only the new rows and keeps the others in place', async () => {
    const id = `big-${uniq()}`;
    await write(study(id, 300));
    const before = await storedRows('ImagingStudy', id);
    expect(before.length).toBe(expectedCounts(study(id, 300)));

    await write(study(id, 301));
    const after = await storedRows('ImagingStudy', id);
    expect(after.length).toBe(expectedCounts(study(id, 301)));
    const beforeCtids = new Set(before.map((r) => r.ctid + r.key));
    const kept = after.filter((r) => beforeCtids.has(r.ctid + r.key));
    // Only the new instance's rows (uid and sop class are already indexed once) are new.
    expect(after.length - kept.length).toBeGreaterThan(0);
    expect(after.length - kept.length).toBeLessThanOrEqual(2);
    expect(kept.length).toBe(before.length);
  });

  test('a changed value replaces its row: search finds the new value only', async () => {
    const id = `chg-${uniq()}`;
    await write(study(id, 2, 'available'));
    await write(study(id, 2, 'registered'));
    const ids = async (q: string) => ((await request(f.express).get(`/fhir/ImagingStudy?_id=${id}&${q}`)).body.entry ?? []).map((e: any) => e.resource.id);
    expect(await ids('status=registered')).toEqual([id]);
    expect(await ids('status=available')).toEqual([]);
    const after = await storedRows('ImagingStudy', id);
    expect(after.filter((r) => r.key.startsWith('fhir_token|status|'))).toHaveLength(1);
  });

  test('removing instances deletes exactly their rows', async () => {
    const id = `rm-${uniq()}`;
    await write(study(id, 10));
    await write(study(id, 3));
    const after = await storedRows('ImagingStudy', id);
    expect(after.length).toBe(expectedCounts(study(id, 3)));
    expect(after.some((r) => r.key.includes('1.2.3.4.7'))).toBe(false);
    expect(after.some((r) => r.key.includes('1.2.3.4.3'))).toBe(true);
  });

  test('open-ended periods and numbers compare equal to their stored form (not rewritten)', async () => {
    const id = `enc-${uniq()}`;
    const encounter = (text: string) => ({
      resourceType: 'Encounter',
      id,
      status: 'finished',
      class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' },
      period: { start: '2024-05-01T10:00:00.250+02:00' },
      length: { value: 1.5, unit: 'h', system: 'http://unitsofmeasure.org', code: 'h' },
      reasonCode: [{ text }],
    });
    await write(encounter('first'));
    const before = await storedRows('Encounter', id);
    await write(encounter('second'));
    const after = await storedRows('Encounter', id);
    const beforeCtids = new Set(before.map((r) => r.ctid + r.key));
    const dateAndNumber = after.filter((r) => r.key.startsWith('fhir_date|') || r.key.startsWith('fhir_number|'));
    expect(dateAndNumber.length).toBeGreaterThan(0);
    expect(dateAndNumber.every((r) => beforeCtids.has(r.ctid + r.key))).toBe(true);
    expect(after.some((r) => r.key.includes('second'))).toBe(true);
    expect(after.some((r) => r.key.includes('first'))).toBe(false);
  });

  test('stray and duplicate stored rows are cleaned up by the next update', async () => {
    const id = `stray-${uniq()}`;
    await write(study(id, 2));
    const rid = (await knex().raw(`SELECT rid FROM fhir_resource WHERE resource_type = 'ImagingStudy' AND id = ?`, [id])).rows[0].rid;
    await knex().raw(`INSERT INTO fhir_token (rid, resource_type, param, system, code, text) VALUES (?, 'ImagingStudy', 'status', NULL, 'stale', NULL)`, [rid]);
    await knex().raw(`INSERT INTO fhir_token (rid, resource_type, param, system, code, text) SELECT rid, resource_type, param, system, code, text FROM fhir_token WHERE rid = ? AND param = 'status'`, [rid]);
    await write(study(id, 2));
    const after = await storedRows('ImagingStudy', id);
    expect(after.length).toBe(expectedCounts(study(id, 2)));
    expect(after.filter((r) => r.key.startsWith('fhir_token|status|'))).toHaveLength(1);
  });

  test('a delete removes every index row of the resource', async () => {
    const id = `del-${uniq()}`;
    await write(study(id, 5));
    expect([200, 204]).toContain((await request(f.express).delete(`/fhir/ImagingStudy/${id}`)).status);
    const rid = (await knex().raw(`SELECT rid FROM fhir_resource WHERE resource_type = 'ImagingStudy' AND id = ?`, [id])).rows[0].rid;
    for (const table of ['fhir_token', 'fhir_string', 'fhir_date', 'fhir_number', 'fhir_reference', 'fhir_uri']) {
      expect(Number((await knex().raw(`SELECT count(*) AS n FROM ${table} WHERE rid = ?`, [rid])).rows[0].n)).toBe(0);
    }
  });
});
