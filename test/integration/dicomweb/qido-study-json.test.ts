import fs from 'node:fs';
import path from 'node:path';
import request from 'supertest';
import { findQidoRows } from '../../../src/db/qido-search';
import type { DicomJson } from '../../../src/dicom/types';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { prepareSearch, searchForStudies } from '../../../src/dicomweb/qido-rs';
import { buildResult } from '../../../src/dicomweb/query-results';
import { restrictStudiesToProjects } from '../../../src/auth/project-filters';
import { buildMultipart } from '../../helpers/multipart-body';
import { sharedData, startTestApp, type TestApp } from '../../helpers/test-app';
import { binaryBody } from '../../helpers/binary-body';

/**
 * Study results written as DICOM JSON text by the database (PS3.18 10.6.3.3, F.2) must be the
 * results the generic path builds from the same rows: same attributes, values, order and paging.
 */
const BASE = 'http://h/dicomweb';
const BRAINIX_STUDY = '2.16.840.1.113669.632.20.1211.10000357775';

describe('QIDO-RS study results written by the database', () => {
  let t: TestApp;
  const odd = { study: newUid(), uid: '1.2.3.4 5/6' };
  const bulk = newUid();
  const noModality = newUid();

  async function stow(parts: Buffer[]) {
    const { body, contentType } = buildMultipart(parts);
    const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).send(body);
    if (res.status !== 200) throw new Error(`STOW ${res.status}: ${JSON.stringify(res.body).slice(0, 500)}`);
  }

  /** The generic path: dataset subsets parsed by the driver, results built attribute by attribute. */
  async function generic(query: Record<string, unknown>): Promise<DicomJson[]> {
    const prepared = prepareSearch('study', { query, dicomwebBaseUrl: BASE });
    const found = await findQidoRows(t.app.db.knex, prepared.search);
    return found.rows.map((row) => buildResult(row, prepared.plan, BASE));
  }

  async function written(query: Record<string, unknown>) {
    const res = await searchForStudies({ db: t.app.db }, { query, dicomwebBaseUrl: BASE });
    expect(typeof res.json).toBe('string');
    return res;
  }

  beforeAll(async () => {
    t = await startTestApp();
    const dir = sharedData('dicom/series/orthanc-BRAINIX/Flair');
    await stow(fs.readdirSync(dir).sort().slice(0, 3).map((f) => fs.readFileSync(path.join(dir, f))));
    await stow(['chrFren', 'chrGerm', 'chrX1', 'chrH31'].map((n) => fs.readFileSync(sharedData(`dicom/charset/pydicom-charset__${n}.dcm`))));
    for (let day = 1; day <= 4; day++) {
      await stow([createSyntheticInstance({ patientID: 'JSON-1', patientName: 'Jason^Jo', studyDate: `2021020${day}`, studyTime: `1${day}0000`, modality: day % 2 ? 'MR' : 'CT' }).bytes]);
    }
    await stow([createSyntheticInstance({ studyInstanceUID: odd.study, patientID: 'JSON-ODD' }).bytes]);
    await stow([createSyntheticInstance({ studyInstanceUID: bulk, patientID: 'JSON-BULK', studyDescription: 'kept out' }).bytes]);
    await stow([createSyntheticInstance({ studyInstanceUID: noModality, patientID: 'JSON-EMPTY' }).bytes]);
    const knex = t.app.db.knex;
    // Rows no STOW writes today, which the written results must still get right.
    await knex('studies').where({ study_uid: odd.study }).update({ study_uid: odd.uid });
    await knex.raw(
      `UPDATE studies SET dataset = dataset || '{"00081030": {"vr": "LO", "BulkDataURI": "bulkdata/00081030"}, "00081032": {"vr": "SQ", "Value": [{"00080104": {"vr": "LO", "BulkDataURI": "bulkdata/x"}, "00080100": {"vr": "SH", "Value": ["P1"]}}]}}'::jsonb WHERE study_uid = ?`,
      [bulk],
    );
    await knex('studies').where({ study_uid: noModality }).update({ modalities: '{}', sop_classes: '{}' });
  });
  afterAll(async () => {
    await t?.close();
  });

  const QUERIES: Record<string, Record<string, unknown>> = {
    'every study (defaults)': {},
    'includefield=all': { includefield: 'all' },
    'includefield of stored and computed attributes': { includefield: ['StudyDescription,00081032', 'SOPClassesInStudy', 'InstitutionName'] },
    'includefield of an attribute the study level lacks (warned, ignored)': { includefield: 'Rows' },
    'a matched non-default key is returned': { AccessionNumber: '*', ReferringPhysicianName: '*', PatientID: 'JSON-1' },
    'fuzzy person name': { PatientName: 'jas', fuzzymatching: 'true' },
    'date range': { StudyDate: '20210202-20210203' },
    'ModalitiesInStudy': { ModalitiesInStudy: 'CT' },
    'limit and offset': { PatientID: 'JSON-1', limit: '2', offset: '1' },
  };

  test.each(Object.entries(QUERIES))('%s: the same results as the generic path', async (_name, query) => {
    const res = await written(query);
    const expected = await generic(query);
    expect(expected.length).toBeGreaterThan(0);
    expect(res.body).toEqual(expected);
    // Same attribute order (PS3.18 F.2: ascending tags) and same result order.
    expect(res.body.map((r) => Object.keys(r))).toEqual(expected.map((r) => Object.keys(r)));
  });

  test('the text is the JSON of the results', async () => {
    const res = await written({ StudyInstanceUID: BRAINIX_STUDY });
    expect(JSON.parse(res.json!)).toEqual(res.body);
    expect(res.body[0]['00201208']).toEqual({ vr: 'IS', Value: [3] });
    expect(res.body[0]['00081190']).toEqual({ vr: 'UR', Value: [`${BASE}/studies/${BRAINIX_STUDY}`] });
  });

  test('a study UID that needs percent-encoding gets an encoded RetrieveURL', async () => {
    const res = await written({ PatientID: 'JSON-ODD' });
    expect(res.body[0]['00081190']).toEqual({ vr: 'UR', Value: [`${BASE}/studies/1.2.3.4%205%2F6`] });
    expect(res.body).toEqual(await generic({ PatientID: 'JSON-ODD' }));
  });

  test('stored elements with a relative BulkDataURI are left out of study results, also inside sequences', async () => {
    const query = { PatientID: 'JSON-BULK', includefield: '00081032' };
    const res = await written(query);
    expect(res.body[0]['00081030']).toBeUndefined();
    expect(res.body[0]['00081032']).toEqual({ vr: 'SQ', Value: [{ '00080100': { vr: 'SH', Value: ['P1'] } }] });
    expect(res.body).toEqual(await generic(query));
  });

  test('a study without modalities has zero-length ModalitiesInStudy and SOPClassesInStudy', async () => {
    const query = { PatientID: 'JSON-EMPTY', includefield: 'SOPClassesInStudy' };
    const res = await written(query);
    expect(res.body[0]['00080061']).toEqual({ vr: 'CS' });
    expect(res.body[0]['00080062']).toEqual({ vr: 'UI' });
    expect(res.body).toEqual(await generic(query));
  });

  test('the written text follows the study when a later request adds a series with another modality', async () => {
    const study = newUid();
    await stow([createSyntheticInstance({ studyInstanceUID: study, patientID: 'JSON-GROW', modality: 'MR' }).bytes]);
    await stow([createSyntheticInstance({ studyInstanceUID: study, patientID: 'JSON-GROW', modality: 'CT', studyDescription: 'grown' }).bytes]);
    const res = await written({ PatientID: 'JSON-GROW' });
    expect(res.body[0]['00080061']).toEqual({ vr: 'CS', Value: ['CT', 'MR'] });
    expect(res.body[0]['00201206']).toEqual({ vr: 'IS', Value: [2] });
    expect(res.body).toEqual(await generic({ PatientID: 'JSON-GROW' }));
  });

  test('rows written before studies.qido_json existed (NULL) get the same results', async () => {
    const knex = t.app.db.knex;
    await knex.raw('ALTER TABLE studies DISABLE TRIGGER studies_qido_json');
    try {
      await knex('studies').where({ patient_id: 'JSON-1' }).update({ qido_json: null });
    } finally {
      await knex.raw('ALTER TABLE studies ENABLE TRIGGER studies_qido_json');
    }
    const [{ n }] = await knex('studies').where({ patient_id: 'JSON-1' }).whereNull('qido_json').count('* as n');
    expect(Number(n)).toBe(4);
    const res = await written({ PatientID: 'JSON-1' });
    expect(res.body).toHaveLength(4);
    expect(res.body).toEqual(await generic({ PatientID: 'JSON-1' }));
  });

  test('a study whose text is too long for the covering index is found by date all the same, in order', async () => {
    const study = newUid();
    await stow([createSyntheticInstance({ studyInstanceUID: study, patientID: 'JSON-LONG', studyDate: '20210203', studyTime: '123000', studyDescription: 'long '.repeat(500) }).bytes]);
    const [{ n }] = await t.app.db.knex('studies').where({ study_uid: study }).whereRaw('octet_length(qido_json) > 2400').count('* as n');
    expect(Number(n)).toBe(1);
    for (const query of [{ StudyDate: '20210201-20210204' }, { StudyDate: '20210201-20210204', limit: '2', offset: '1' }]) {
      const res = await written(query);
      expect(res.body).toEqual(await generic(query));
      if (!query.limit) expect(res.body.map((r) => (r['00100020'].Value as string[])[0])).toContain('JSON-LONG');
    }
  });

  test('the study list by date gives the same results on every call (its prepared statement keeps a generic plan after the fifth)', async () => {
    const queries = [{}, { StudyDate: '20210201-20210204' }, { StudyDate: '20210202' }, { StudyDate: '20210203-' }, { StudyDate: '-20210202' }, { StudyDate: '20210201-20210204', limit: '2', offset: '1' }];
    for (let round = 0; round < 3; round++) {
      for (const query of queries) {
        const res = await written(query);
        expect(res.body).toEqual(await generic(query));
      }
    }
  });

  test('study look-ups by exact PatientID, StudyInstanceUID or AccessionNumber give the same results on every call (prepared statements)', async () => {
    const queries: Array<Record<string, unknown>> = [
      { PatientID: 'JSON-1' },
      { PatientID: 'JSON-ODD' },
      { StudyInstanceUID: BRAINIX_STUDY },
      { '00100020': 'JSON-1', limit: '2', offset: '1' },
      { AccessionNumber: 'none-such' },
      { PatientID: 'JSON-1', StudyInstanceUID: BRAINIX_STUDY },
    ];
    for (let round = 0; round < 3; round++) {
      for (const query of queries) {
        const res = await written(query);
        expect(res.body).toEqual(await generic(query));
      }
    }
  });

  test('a restricted look-up by PatientID (probing the projects of each study) sees only the linked studies, on every call', async () => {
    const knex = t.app.db.knex;
    await knex('projects').insert({ id: 'json-lookup', name: 'JSON look-up' }).onConflict('id').ignore();
    const linked = await knex('studies').where({ patient_id: 'JSON-1' }).orderBy('study_date').limit(2).select('id', 'study_uid');
    await knex('project_studies').insert(linked.map((r: { id: number }) => ({ project_id: 'json-lookup', study_pk: r.id }))).onConflict(['project_id', 'study_pk']).ignore();
    const restrictStudies = restrictStudiesToProjects(['json-lookup']);
    for (let round = 0; round < 8; round++) {
      const patientID = round % 2 ? 'JSON-1' : 'JSON-ODD';
      const res = await searchForStudies({ db: t.app.db }, { query: { PatientID: patientID }, dicomwebBaseUrl: BASE }, { restrictStudies });
      const uids = res.body.map((r) => (r['0020000D'].Value as string[])[0]).sort();
      expect(uids).toEqual(patientID === 'JSON-1' ? linked.map((r: { study_uid: string }) => r.study_uid).sort() : []);
    }
  });

  /** The raw bytes of an HTTP answer, as the client receives them. */
  async function httpBytes(method: 'get' | 'head', query: Record<string, unknown>) {
    const res = await request(t.http)
      [method]('/dicomweb/studies')
      .query(query)
      .set('Accept', 'application/dicom+json')
      // RetrieveURLs then start with BASE, as those of the service calls above.
      .set('X-Forwarded-Host', 'h')
      .buffer(true)
      .parse(binaryBody);
    return { status: res.status, headers: res.headers, bytes: res.body as Buffer };
  }

  test('over HTTP, the prepared study list by date and the look-ups send the UTF-8 bytes of the generic results, non-ASCII names and encoded RetrieveURLs included', async () => {
    const knex = t.app.db.knex;
    const [named] = await knex('studies').whereRaw('octet_length(qido_json) > char_length(qido_json)').whereNotNull('patient_id').select('patient_id').limit(1);
    expect(named).toBeDefined();
    const [accession] = await knex('studies').whereNotNull('accession_number').whereNot('accession_number', '').select('accession_number').limit(1);
    expect(accession).toBeDefined();
    const queries: Array<Record<string, unknown>> = [
      {},
      { StudyDate: '20210201-20210204' },
      { StudyDate: '20210202' },
      { StudyDate: '20210201-20210204', limit: '2', offset: '1' },
      { PatientID: 'JSON-1' },
      { PatientID: 'JSON-1', limit: '2', offset: '1' },
      { PatientID: 'JSON-ODD' },
      { PatientID: named.patient_id },
      { StudyInstanceUID: BRAINIX_STUDY },
      { AccessionNumber: accession.accession_number },
    ];
    const fatal = new TextDecoder('utf-8', { fatal: true });
    for (const query of queries) {
      const got = await httpBytes('get', query);
      expect({ query, status: got.status }).toEqual({ query, status: 200 });
      expect(got.headers['content-type']).toBe('application/dicom+json; charset=utf-8');
      expect(Number(got.headers['content-length'])).toBe(got.bytes.length);
      expect(got.bytes.equals(Buffer.from((await written(query)).json!, 'utf8'))).toBe(true);
      const sent = JSON.parse(fatal.decode(got.bytes)) as DicomJson[];
      const expected = await generic(query);
      expect(sent).toEqual(expected);
      expect(sent.map((r) => Object.keys(r))).toEqual(expected.map((r) => Object.keys(r)));
      const head = await httpBytes('head', query);
      expect({ status: head.status, length: head.headers['content-length'], body: head.bytes?.length ?? 0 }).toEqual({ status: 200, length: String(got.bytes.length), body: 0 });
    }
    const everything = JSON.parse(fatal.decode((await httpBytes('get', {})).bytes)) as DicomJson[];
    const names = everything.map((r) => JSON.stringify(r['00100010'] ?? null));
    expect(names.some((n) => /[^\x00-\x7f]/.test(n))).toBe(true);
    const urls = everything.map((r) => (r['00081190'].Value as string[])[0]);
    expect(urls).toContain(`${BASE}/studies/1.2.3.4%205%2F6`);
  });

  test('an empty answer is an empty array', async () => {
    const res = await written({ PatientID: 'nobody-here' });
    expect(res.json).toBe('[]');
    expect(res.body).toEqual([]);
  });

  test('over HTTP the text is sent as is, as DICOM JSON', async () => {
    const res = await request(t.http).get('/dicomweb/studies?PatientID=JSON-1&limit=2').set('Accept', 'application/dicom+json');
    expect({ status: res.status, body: res.status === 200 ? undefined : res.text }).toEqual({ status: 200 });
    expect(res.headers['content-type']).toBe('application/dicom+json; charset=utf-8');
    expect(Number(res.headers['content-length'])).toBe(Buffer.byteLength(res.text));
    const expected = (await generic({ PatientID: 'JSON-1', limit: '2' })).map((r) => {
      const uid = (r['0020000D'].Value as string[])[0];
      return { ...r, '00081190': { vr: 'UR', Value: [expect.stringMatching(new RegExp(`^http://127\\.0\\.0\\.1:\\d+/dicomweb/studies/${uid.replace(/\./g, '\\.')}$`))] } };
    });
    expect(res.body).toEqual(expected);
  });
});
