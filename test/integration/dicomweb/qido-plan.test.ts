import type { Knex } from 'knex';
import { buildQidoQuery, buildQidoStudyJsonQuery, type QidoLevel } from '../../../src/db/qido-search';
import { MORE_RESULTS_WARNING, prepareSearch, searchForStudies, type SearchRequest } from '../../../src/dicomweb/qido-rs';
import { planStudyJson } from '../../../src/dicomweb/query-results';
import { startTestApp, testDbKind, type TestApp } from '../../helpers/test-app';

/**
 * Query plans of QIDO-RS searches on a generated index of QIDO_PLAN_INSTANCES instances
 * (default 300,000; 5 per series, 3 series per study): every match key must be answered
 * through an index, never a sequential scan of studies, series or instances. PostgreSQL
 * server only: the embedded engine has no pg_trgm and its planner is not what production runs.
 */
const INSTANCES = Number(process.env.QIDO_PLAN_INSTANCES ?? 300_000);
const SERIES = Math.ceil(INSTANCES / 5);
const STUDIES = Math.ceil(SERIES / 3);
const PATIENTS = Math.ceil(STUDIES / 2);

const describePg = testDbKind() === 'postgres' ? describe : describe.skip;

async function generateIndex(knex: Knex): Promise<void> {
  await knex.raw(
    `INSERT INTO patients (identity_key, patient_id, issuer_of_patient_id, patient_name)
     SELECT 'ISS' || (g % 50) || '|PID' || g, 'PID' || g, 'ISS' || (g % 50), 'Name' || g || '^Given' || (g % 100)
     FROM generate_series(1, ?) g`,
    [PATIENTS],
  );
  await knex.raw(
    `INSERT INTO studies (study_uid, patient_pk, patient_id, issuer_of_patient_id, patient_name, patient_name_norm, patient_birth_date,
       patient_sex, study_date, study_time, accession_number, study_id, study_description, referring_physician_name, institution_name,
       num_series, num_instances, modalities, sop_classes, dataset)
     SELECT '1.2.826.0.1.3680043.' || g, 1 + (g % ?), 'PID' || (1 + (g % ?)), 'ISS' || (g % 50), 'Name' || g || '^Given' || (g % 100),
       'name' || g || '^given' || (g % 100), date '1930-01-01' + (g % 25000), (ARRAY['F','M','O'])[1 + g % 3],
       date '2000-01-01' + (g % 9000), lpad(((g * 7) % 240000)::text, 6, '0'), 'ACC' || g, 'S' || g,
       'Study ' || g || ' ' || (ARRAY['brain','knee','retina','chest'])[1 + g % 4], 'Ref' || (g % 500) || '^Doc',
       'Hospital ' || (g % 200), 3, 15,
       CASE WHEN g % 100 = 0 THEN ARRAY['OP','OPT'] ELSE ARRAY['CT','MR'] END,
       CASE WHEN g % 100 = 0 THEN ARRAY['1.2.840.10008.5.1.4.1.1.77.1.5.4'] ELSE ARRAY['1.2.840.10008.5.1.4.1.1.2'] END,
       jsonb_build_object('0020000D', jsonb_build_object('vr', 'UI', 'Value', jsonb_build_array('1.2.826.0.1.3680043.' || g)))
     FROM generate_series(1, ?) g`,
    [PATIENTS, PATIENTS, STUDIES],
  );
  await knex.raw(
    `INSERT INTO series (series_uid, study_pk, modality, series_number, series_description, series_date, series_time, body_part_examined,
       laterality, manufacturer, manufacturer_model_name, station_name, device_type_codes, pps_start_date, pps_start_time, num_instances, dataset)
     SELECT '1.2.826.0.2.' || g, 1 + ((g - 1) / 3),
       CASE WHEN (1 + (g - 1) / 3) % 100 = 0 THEN (ARRAY['OPT','OP','OP'])[1 + g % 3] ELSE (ARRAY['CT','MR','MR'])[1 + g % 3] END,
       g % 1000, 'Series ' || g, date '2000-01-01' + (g % 9000), lpad(((g * 11) % 240000)::text, 6, '0'), 'PART' || (g % 300),
       CASE WHEN g % 10 = 0 THEN NULL WHEN g % 2 = 0 THEN 'R' ELSE 'L' END, 'Maker ' || (g % 40), 'Model ' || (g % 700), 'ST' || (g % 900),
       CASE WHEN (1 + (g - 1) / 3) % 100 = 0 THEN ARRAY['A-00E8A'] ELSE '{}'::text[] END,
       date '2000-01-01' + (g % 9000), lpad(((g * 13) % 240000)::text, 6, '0'), 5, '{}'::jsonb
     FROM generate_series(1, ?) g`,
    [SERIES],
  );
  await knex.raw(
    `INSERT INTO instances (sop_instance_uid, series_pk, study_pk, sop_class_uid, instance_number, image_laterality, frame_lateralities,
       content_date, content_time, acquisition_datetime, transfer_syntax_uid, blob_key, size, has_file_meta, header_length, dataset)
     SELECT '1.2.826.0.3.' || g, 1 + ((g - 1) / 5), 1 + ((g - 1) / 15),
       CASE WHEN (1 + (g - 1) / 15) % 100 = 0 THEN '1.2.840.10008.5.1.4.1.1.77.1.5.4' ELSE '1.2.840.10008.5.1.4.1.1.2' END,
       1 + ((g - 1) % 5), CASE WHEN g % 2 = 0 THEN 'R' ELSE 'L' END,
       CASE WHEN g % 997 = 0 THEN ARRAY['B'] ELSE '{}'::text[] END,
       date '2000-01-01' + (g % 9000), lpad(((g * 17) % 240000)::text, 6, '0'),
       to_char(timestamp '2000-01-01' + g * interval '17 minutes', 'YYYYMMDDHH24MISS'),
       '1.2.840.10008.1.2.1', lpad(to_hex(g), 64, '0'), 1000, true, 500,
       jsonb_build_object('00080018', jsonb_build_object('vr', 'UI', 'Value', jsonb_build_array('1.2.826.0.3.' || g)))
     FROM generate_series(1, ?) g`,
    [INSTANCES],
  );
  // The rare FrameLaterality 'B' (300 rows) is sampled in full: from ANALYZE's default sample of
  // 30,000 rows its estimate wandered (440 seen), and with it the plan this test checks.
  await knex.raw('ALTER TABLE instances ALTER COLUMN frame_lateralities SET STATISTICS 10000');
  // VACUUM also merges the GIN pending lists, as autovacuum does on a live server.
  await knex.raw('VACUUM ANALYZE patients, studies, series, instances');
}

interface Case {
  level: QidoLevel;
  query: Record<string, string>;
  study?: string;
  series?: string;
}

const study = (n: number) => `1.2.826.0.1.3680043.${n}`;
const CASES: Record<string, Case> = {
  'studies: no keys (paging order)': { level: 'study', query: {} },
  'studies: StudyInstanceUID list': { level: 'study', query: { StudyInstanceUID: `${study(5)},${study(7)}` } },
  'studies: PatientID': { level: 'study', query: { PatientID: 'PID1234' } },
  'studies: PatientID prefix': { level: 'study', query: { PatientID: 'PID1234*' } },
  'studies: PatientID infix (OHIF)': { level: 'study', query: { '00100020': '*ID12345*' } },
  'studies: IssuerOfPatientID + PatientID': { level: 'study', query: { IssuerOfPatientID: 'ISS7', PatientID: 'PID57' } },
  'studies: PatientName exact': { level: 'study', query: { PatientName: 'NAME1234^GIVEN34' } },
  'studies: PatientName prefix': { level: 'study', query: { PatientName: 'name1234*' } },
  'studies: PatientName infix (OHIF)': { level: 'study', query: { PatientName: '*ame12345*' } },
  'studies: PatientName fuzzy': { level: 'study', query: { PatientName: 'name1234', fuzzymatching: 'true' } },
  'studies: PatientBirthDate': { level: 'study', query: { PatientBirthDate: '19500101' } },
  'studies: StudyDate range': { level: 'study', query: { StudyDate: '20100101-20100103' } },
  'studies: StudyTime range': { level: 'study', query: { StudyTime: '101500-101501' } },
  'studies: AccessionNumber': { level: 'study', query: { AccessionNumber: 'ACC4711' } },
  'studies: AccessionNumber infix (OHIF)': { level: 'study', query: { AccessionNumber: '*CC4711*' } },
  'studies: StudyDescription infix (OHIF)': { level: 'study', query: { StudyDescription: '*y 4711 b*' } },
  'studies: StudyID': { level: 'study', query: { StudyID: 'S4711' } },
  'studies: ModalitiesInStudy': { level: 'study', query: { ModalitiesInStudy: 'OPT' } },
  'studies: SOPClassesInStudy': { level: 'study', query: { SOPClassesInStudy: '1.2.840.10008.5.1.4.1.1.77.1.5.4' } },
  'studies: ReferringPhysicianName': { level: 'study', query: { ReferringPhysicianName: 'ref42^doc' } },
  'studies: ReferringPhysicianName fuzzy': { level: 'study', query: { ReferringPhysicianName: 'ref42', fuzzymatching: 'true' } },
  'studies: InstitutionName': { level: 'study', query: { InstitutionName: 'Hospital 7' } },
  'studies: Modality (relational, series key)': { level: 'study', query: { Modality: 'OPT' } },
  'studies: SOPInstanceUID (relational, instance key)': { level: 'study', query: { SOPInstanceUID: '1.2.826.0.3.777' } },
  'series: no keys': { level: 'series', query: {} },
  'series: of one study': { level: 'series', query: {}, study: study(4711) },
  'series: SeriesInstanceUID': { level: 'series', query: { SeriesInstanceUID: '1.2.826.0.2.99' } },
  'series: Modality OPT': { level: 'series', query: { Modality: 'OPT' } },
  'series: Laterality (unselective)': { level: 'series', query: { Laterality: 'L' } },
  'series: SeriesNumber': { level: 'series', query: { SeriesNumber: '417' } },
  'series: SeriesDescription prefix': { level: 'series', query: { SeriesDescription: 'Series 4711*' } },
  'series: SeriesDate': { level: 'series', query: { SeriesDate: '20100101' } },
  'series: BodyPartExamined': { level: 'series', query: { BodyPartExamined: 'PART7' } },
  'series: ManufacturerModelName prefix': { level: 'series', query: { ManufacturerModelName: 'Model 69*' } },
  'series: StationName': { level: 'series', query: { StationName: 'ST77' } },
  'series: device type code': { level: 'series', query: { '00220015.00080100': 'A-00E8A' } },
  'series: PerformedProcedureStepStartDate': { level: 'series', query: { PerformedProcedureStepStartDate: '20100101' } },
  'series: PatientID (relational)': { level: 'series', query: { PatientID: 'PID1234' } },
  'series: FrameLaterality (relational, instance key)': { level: 'series', query: { FrameLaterality: 'B' } },
  'instances: no keys': { level: 'instance', query: {} },
  'instances: of one series': { level: 'instance', query: {}, study: study(1), series: '1.2.826.0.2.2' },
  'instances: of one study': { level: 'instance', query: {}, study: study(4711) },
  'instances: SOPInstanceUID': { level: 'instance', query: { SOPInstanceUID: '1.2.826.0.3.4711' } },
  'instances: SOPClassUID (rare)': { level: 'instance', query: { SOPClassUID: '1.2.840.10008.5.1.4.1.1.77.1.5.4' } },
  'instances: InstanceNumber (unselective)': { level: 'instance', query: { InstanceNumber: '3' } },
  'instances: ImageLaterality (unselective)': { level: 'instance', query: { ImageLaterality: 'R' } },
  'instances: FrameLaterality': { level: 'instance', query: { FrameLaterality: 'B' } },
  'instances: ContentDate': { level: 'instance', query: { ContentDate: '20100101' } },
  'instances: ContentTime range': { level: 'instance', query: { ContentTime: '101500-101501' } },
  'instances: AcquisitionDateTime range': { level: 'instance', query: { AcquisitionDateTime: '2001010100-2001010101' } },
  'instances: PatientID + Modality (relational)': { level: 'instance', query: { PatientID: 'PID1234', Modality: 'MR' } },
  'instances: ModalitiesInStudy + ImageLaterality': { level: 'instance', query: { ModalitiesInStudy: 'OPT', ImageLaterality: 'L', limit: '100' } },
};

describePg(`QIDO-RS query plans on ${INSTANCES} generated instances`, () => {
  let t: TestApp;
  const timings: string[] = [];

  beforeAll(async () => {
    t = await startTestApp();
    await generateIndex(t.app.db.knex);
  }, 600_000);
  afterAll(async () => {
    if (timings.length > 0) process.stdout.write(`\nQIDO-RS timings (${INSTANCES} instances, EXPLAIN ANALYZE execution time):\n${timings.join('\n')}\n`);
    await t?.close();
  });

  test.each(Object.entries(CASES))('%s uses indexes only', async (name, c) => {
    const req: SearchRequest = { query: c.query, studyInstanceUID: c.study, seriesInstanceUID: c.series, dicomwebBaseUrl: 'http://h/dicomweb' };
    const { search, plan: returned } = prepareSearch(c.level, req);
    // The query each search runs: study results are written as DICOM JSON by the database.
    const query = c.level === 'study' ? buildQidoStudyJsonQuery(t.app.db.knex, search, planStudyJson(returned, req.dicomwebBaseUrl)) : buildQidoQuery(t.app.db.knex, search);
    const sql = query.toSQL();
    const result = await t.app.db.knex.raw(`EXPLAIN (ANALYZE, FORMAT TEXT) ${sql.sql}`, sql.bindings as unknown as Knex.RawBinding[]);
    const plan = (result.rows as Array<{ 'QUERY PLAN': string }>).map((r) => r['QUERY PLAN']).join('\n');
    const ms = /Execution Time: ([\d.]+) ms/.exec(plan)?.[1];
    timings.push(`  ${name.padEnd(56)} ${ms} ms`);
    expect({ name, plan }).not.toEqual({ name, plan: expect.stringMatching(/Seq Scan on (studies|series|instances)\b/) });
  });

  test('a StudyDate search reads the result texts from the covering index, not the study rows', async () => {
    const req: SearchRequest = { query: { StudyDate: '20100101-20100131' }, dicomwebBaseUrl: 'http://h/dicomweb' };
    const { search, plan: returned } = prepareSearch('study', req);
    const sql = buildQidoStudyJsonQuery(t.app.db.knex, search, planStudyJson(returned, req.dicomwebBaseUrl)).toSQL();
    const result = await t.app.db.knex.raw(`EXPLAIN (FORMAT TEXT) ${sql.sql}`, sql.bindings as unknown as Knex.RawBinding[]);
    const plan = (result.rows as Array<{ 'QUERY PLAN': string }>).map((r) => r['QUERY PLAN']).join('\n');
    expect(plan).toMatch(/Index Only Scan using studies_qido_page_idx/);
    expect(plan).toMatch(/studies_qido_page_rest_idx/);
  });

  test('a search the default limit cuts short says that more results exist', async () => {
    const res = await searchForStudies({ db: t.app.db }, { query: { PatientSex: 'F' }, dicomwebBaseUrl: 'http://h/dicomweb' });
    expect(res.body).toHaveLength(1000);
    expect(res.warnings).toEqual([`${MORE_RESULTS_WARNING} (offset=1000)`]);
  });
});
