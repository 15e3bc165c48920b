/**
 * WADO-URI access, views and audit, exactly as for WADO-RS: researchers name de-identified UIDs
 * and get de-identified instances (withheld burned-in instances refused), data managers get
 * patient identifiers masked, another project's study answers like a missing one, and every
 * request writes a DICOM 110104 AuditEvent naming the study of `studyUID`.
 */
import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { searchAuditEvents } from '../../../src/audit/audit-store';
import { createProject } from '../../../src/auth/project-store';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { binaryBody } from '../../helpers/binary-body';
import { burnedInInstance } from '../../helpers/burned-in-instance';
import { buildMultipart } from '../../helpers/multipart-body';
import { startTestApp, type TestApp } from '../../helpers/test-app';
// dcmjs ships no type declarations.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const dcmjs = require('dcmjs');

type Ids = { study: string; series: string; sop: string };

const wado = (ids: Ids, extra = '') => `/dicomweb/wado?requestType=WADO&studyUID=${ids.study}&seriesUID=${ids.series}&objectUID=${ids.sop}${extra}`;
const errorText = (res: request.Response) => JSON.parse(res.body.toString())['00000902']?.Value?.[0] as string;
const datasetOf = (bytes: Buffer) =>
  dcmjs.data.DicomMetaDictionary.naturalizeDataset(dcmjs.data.DicomMessage.readFile(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)).dict);
const idsOf = (i: { studyInstanceUID: string; seriesInstanceUID: string; sopInstanceUID: string }): Ids => ({ study: i.studyInstanceUID, series: i.seriesInstanceUID, sop: i.sopInstanceUID });

describe('WADO-URI access, views and audit', () => {
  let t: TestApp;
  let researcher: string;
  let dataManager: string;
  const patientID = `MRN-${newUid().slice(-10)}`;
  const patientName = `Roe^Richard${newUid().slice(-6)}`;
  const mine = createSyntheticInstance({ patientID, patientName, rows: 8, columns: 8, bitsAllocated: 8, studyDate: '20210304' });
  const burned = burnedInInstance({ studyInstanceUID: mine.studyInstanceUID, patientID, patientName });
  const theirs = createSyntheticInstance({ patientID: `MRN-${newUid().slice(-10)}`, rows: 8, columns: 8, bitsAllocated: 8 });
  let map: (uid: string) => string;
  const deid = (i: Ids): Ids => ({ study: map(i.study), series: map(i.series), sop: map(i.sop) });
  const missing = (): Ids => ({ study: newUid(), series: newUid(), sop: newUid() });
  const as = (token: string, path: string, requestId = `req-${randomUUID()}`) =>
    request(t.app.express).get(path).set('Authorization', `Bearer ${token}`).set('X-Request-Id', requestId).buffer(true).parse(binaryBody);

  beforeAll(async () => {
    t = await startTestApp();
    await createProject(t.app.db.knex, { id: 'P1', name: 'Project one' });
    await createProject(t.app.db.knex, { id: 'P2', name: 'Project two' });
    for (const [project, files] of [['P1', [mine.bytes, burned.bytes]], ['P2', [theirs.bytes]]] as const) {
      const { body, contentType } = buildMultipart([...files]);
      const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).set('X-Project', project).send(body);
      expect(res.status).toBe(200);
    }
    researcher = await t.token('researcher', ['P1']);
    dataManager = await t.token('data-manager', ['P1']);
    map = t.app.privacy.uidMapper('P1');
  });
  afterAll(() => t?.close());

  describe('researchers', () => {
    test('get a de-identified instance through its pseudonymous UIDs', async () => {
      const ids = deid(idsOf(mine));
      const res = await as(researcher, wado(ids, '&contentType=application/dicom'));
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toMatch(/^application\/dicom; transfer-syntax=/);
      const text = res.body.toString('latin1');
      for (const secret of [patientID, patientName, mine.studyInstanceUID, mine.seriesInstanceUID, mine.sopInstanceUID]) expect(text).not.toContain(secret);
      const ds = datasetOf(res.body);
      expect([ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID]).toEqual([ids.study, ids.series, ids.sop]);
      expect(ds.PatientIdentityRemoved).toBe('YES');
      expect(JSON.stringify(ds.PatientName ?? '')).not.toContain('Roe');
    });

    test('get the same de-identified bytes as WADO-RS, and anonymize=yes is honoured by that view', async () => {
      const ids = deid(idsOf(mine));
      const rs = await as(researcher, `/dicomweb/studies/${ids.study}/series/${ids.series}/instances/${ids.sop}`).set('Accept', 'application/dicom');
      const uri = await as(researcher, wado(ids, '&contentType=application/dicom&anonymize=yes'));
      expect(uri.status).toBe(200);
      expect(uri.body.equals(rs.body)).toBe(true);
    });

    test('cannot use the original UIDs: 404 exactly like a missing object', async () => {
      const original = await as(researcher, wado(idsOf(mine), '&contentType=application/dicom'));
      const gone = missing();
      const absent = await as(researcher, wado(gone, '&contentType=application/dicom'));
      expect(original.status).toBe(404);
      expect(errorText(original).replace(mine.studyInstanceUID, '<id>')).toBe(errorText(absent).replace(gone.study, '<id>'));
    });

    test('get rendered images, but a withheld (burned-in) instance is refused as WADO-RS refuses it', async () => {
      const ok = await as(researcher, wado(deid(idsOf(mine))));
      expect(ok.status).toBe(200);
      expect(ok.headers['content-type']).toBe('image/jpeg');
      const ids = deid(idsOf(burned));
      const uri = await as(researcher, wado(ids));
      const rs = await as(researcher, `/dicomweb/studies/${ids.study}/series/${ids.series}/instances/${ids.sop}/rendered`);
      expect(uri.status).toBe(404);
      expect(errorText(uri)).toMatch(/withheld from researchers pending burned-in annotation review/);
      expect(errorText(uri)).toBe(errorText(rs));
    });

    test('cannot ask for another transfer syntax (a transcoded header would not be de-identified)', async () => {
      const res = await as(researcher, wado(deid(idsOf(mine)), '&contentType=application/dicom&transferSyntax=1.2.840.10008.1.2.4.50'));
      expect(res.status).toBe(406);
      expect(errorText(res)).toMatch(/de-identified instances are offered in their stored transfer syntax only/);
    });
  });

  describe('data managers', () => {
    test('get patient identifiers masked in a delivered instance, as WADO-RS masks them', async () => {
      const res = await as(dataManager, wado(idsOf(mine), '&contentType=application/dicom'));
      expect(res.status).toBe(200);
      const ds = datasetOf(res.body);
      expect(ds.PatientID).toBe('***');
      expect(res.body.toString('latin1')).not.toContain(patientID);
      expect(ds.SOPInstanceUID).toBe(mine.sopInstanceUID);
    });

    test('another project\'s study answers exactly like a missing one (404, same body)', async () => {
      const gone = missing();
      for (const extra of ['&contentType=application/dicom', '', '&contentType=image/png']) {
        const other = await as(dataManager, wado(idsOf(theirs), extra));
        const absent = await as(dataManager, wado(gone, extra));
        expect(other.status).toBe(404);
        expect(other.headers['content-type']).toBe(absent.headers['content-type']);
        expect(other.body.toString().split(theirs.studyInstanceUID).join('<id>')).toBe(absent.body.toString().split(gone.study).join('<id>'));
      }
    });

    test('anonymize=yes is refused: this server does not de-identify identified answers on request', async () => {
      const res = await as(dataManager, wado(idsOf(mine), '&contentType=application/dicom&anonymize=yes'));
      expect(res.status).toBe(403);
      expect(errorText(res)).toMatch(/anonymize=yes is served only through the de-identified view/);
    });
  });

  describe('audit', () => {
    const eventsOf = async (requestId: string) => (await searchAuditEvents(t.app.db.knex, { requestId })).events;
    const studyEntities = (e: { entity?: Array<{ what?: { identifier?: { value?: string; type?: { coding?: Array<{ code?: string }> } } } }> }) =>
      (e.entity ?? []).filter((x) => x.what?.identifier?.type?.coding?.[0]?.code === '110180').map((x) => x.what!.identifier!.value);

    test('a retrieve is a DICOM Instances Transferred (110104) read naming the study', async () => {
      const rid = `req-${randomUUID()}`;
      expect((await as(t.adminToken, wado(idsOf(mine), '&contentType=application/dicom'), rid)).status).toBe(200);
      const [e] = await eventsOf(rid);
      expect(e).toMatchObject({ type: { code: '110104' }, action: 'R', outcome: '0' });
      expect(studyEntities(e)).toEqual([mine.studyInstanceUID]);
    });

    test('a rendered retrieve and a refused one are audited too (the failure with its outcome)', async () => {
      const ok = `req-${randomUUID()}`;
      expect((await as(t.adminToken, wado(idsOf(mine)), ok)).status).toBe(200);
      expect((await eventsOf(ok))[0]).toMatchObject({ type: { code: '110104' }, outcome: '0' });
      const refused = `req-${randomUUID()}`;
      const ids = deid(idsOf(burned));
      expect((await as(researcher, wado(ids), refused)).status).toBe(404);
      const [e] = await eventsOf(refused);
      expect(e).toMatchObject({ type: { code: '110104' }, outcome: '4' });
      expect(studyEntities(e)).toEqual([ids.study]);
    });

    test('an anonymous request is refused with 401 and audited', async () => {
      const rid = `req-${randomUUID()}`;
      const res = await request(t.app.express).get(wado(idsOf(mine))).set('X-Request-Id', rid);
      expect(res.status).toBe(401);
      expect((await eventsOf(rid))[0]).toMatchObject({ type: { code: '110104' }, outcome: '4' });
    });
  });
});
