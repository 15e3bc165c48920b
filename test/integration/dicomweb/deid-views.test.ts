/**
 * DICOMweb researcher views (PS3.15 Annex E at query and retrieve time): researchers address
 * studies by de-identified UIDs, see PatientKeys and shifted dates, cannot probe hidden values,
 * and never receive withheld (burned-in annotation) instances; admins still see everything.
 */
import request from 'supertest';
import { createProject } from '../../../src/auth/project-store';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { burnedInInstance } from '../../helpers/burned-in-instance';
import { buildMultipart } from '../../helpers/multipart-body';
import { startTestApp, type TestApp } from '../../helpers/test-app';

type DicomJson = Record<string, { vr: string; Value?: unknown[]; BulkDataURI?: string }>;

const QIDO = { Accept: 'application/dicom+json' };
const value = (d: DicomJson, tag: string) => d[tag]?.Value?.[0];
const errorText = (res: request.Response) => (res.body?.['00000902']?.Value?.[0] as string | undefined) ?? '';

async function stow(t: TestApp, project: string, files: Buffer[]): Promise<void> {
  const { body, contentType } = buildMultipart(files);
  const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).set('X-Project', project).send(body);
  if (res.status !== 200) throw new Error(`STOW answered ${res.status}: ${JSON.stringify(res.body).slice(0, 500)}`);
}

function get(t: TestApp, token: string, path: string) {
  return request(t.app.express).get(path).set('Authorization', `Bearer ${token}`);
}

describe('DICOMweb researcher views', () => {
  let t: TestApp;
  let researcher: string;
  let researcherP2: string;
  const patientID = `MRN-${newUid().slice(-10)}`;
  const patientName = `Doe^Jane${newUid().slice(-6)}`;
  const accession = `ACC${newUid().slice(-8)}`;
  const first = createSyntheticInstance({
    patientID,
    patientName,
    accessionNumber: accession,
    studyDate: '20200110',
    studyTime: '101500',
    rows: 8,
    columns: 8,
    bitsAllocated: 8,
    extra: { SeriesDate: '20200110', AcquisitionDateTime: '20200110101500' },
  });
  const second = createSyntheticInstance({ patientID, patientName, studyDate: '20200305', rows: 8, columns: 8, bitsAllocated: 8 });
  const burned = burnedInInstance({ studyInstanceUID: first.studyInstanceUID, patientID, patientName });
  const originals = [first.studyInstanceUID, first.seriesInstanceUID, first.sopInstanceUID, second.studyInstanceUID, second.sopInstanceUID, burned.sopInstanceUID, burned.seriesInstanceUID];

  beforeAll(async () => {
    t = await startTestApp();
    await createProject(t.app.db.knex, { id: 'P1', name: 'Project one' });
    await createProject(t.app.db.knex, { id: 'P2', name: 'Project two' });
    await stow(t, 'P1', [first.bytes, second.bytes, burned.bytes]);
    await stow(t, 'P2', [first.bytes]);
    researcher = await t.token('researcher', ['P1']);
    researcherP2 = await t.token('researcher', ['P2']);
  });
  afterAll(() => t?.close());

  async function studiesAs(token: string, query = ''): Promise<DicomJson[]> {
    const res = await get(t, token, `/dicomweb/studies?includefield=all${query}`).set(QIDO);
    expect(res.status).toBe(200);
    return res.body as DicomJson[];
  }

  /** The researcher's (study, series, sop) UIDs of an instance, found through QIDO. */
  async function deidIdsOf(token: string, which: 'earlier' | 'later' = 'later'): Promise<{ study: string; series: string; sop: string }> {
    const all = await studiesAs(token);
    const sorted = all.sort((a, b) => String(value(a, '00080020')).localeCompare(String(value(b, '00080020'))));
    const study = which === 'earlier' ? sorted[0] : sorted[sorted.length - 1];
    const studyUid = String(value(study, '0020000D'));
    const instances = (await get(t, token, `/dicomweb/studies/${studyUid}/instances`).set(QIDO)).body as DicomJson[];
    return { study: studyUid, series: String(value(instances[0], '0020000E')), sop: String(value(instances[0], '00080018')) };
  }

  function expectNoIdentifiers(text: string): void {
    for (const secret of [patientID, patientName.split('^')[1], accession, ...originals]) expect(text).not.toContain(secret);
  }

  it('answers QIDO with de-identified UIDs, the PatientKey and RetrieveURLs on de-identified paths', async () => {
    const res = await get(t, researcher, '/dicomweb/studies?includefield=all').set(QIDO);
    expect(res.status).toBe(200);
    expectNoIdentifiers(res.text);
    const studies = res.body as DicomJson[];
    expect(studies).toHaveLength(2);
    for (const s of studies) {
      expect(String(value(s, '0020000D'))).toMatch(/^2\.25\.\d+$/);
      expect(value(s, '00100020')).toBe(value(studies[0], '00100020'));
      expect(String(value(s, '00081190'))).toContain(`/studies/${value(s, '0020000D')}`);
      expect(value(s, '00120062')).toBe('YES');
    }
  });

  it('keeps the interval between two studies of one patient and shifts both dates', async () => {
    const studies = await studiesAs(researcher);
    const dates = studies.map((s) => String(value(s, '00080020'))).sort();
    const day = (d: string) => Date.UTC(Number(d.slice(0, 4)), Number(d.slice(4, 6)) - 1, Number(d.slice(6, 8))) / 86_400_000;
    expect(day(dates[1]) - day(dates[0])).toBe(day('20200305') - day('20200110'));
    expect(dates).not.toContain('20200110');
  });

  it('matches StudyDate on the shifted date a researcher sees, not the stored one', async () => {
    const studies = await studiesAs(researcher);
    const shifted = studies.map((s) => String(value(s, '00080020'))).sort()[0];
    const hit = await studiesAs(researcher, `&StudyDate=${shifted}`);
    expect(hit).toHaveLength(1);
    expect(value(hit[0], '00080020')).toBe(shifted);
    expect(await studiesAs(researcher, '&StudyDate=20200110')).toHaveLength(0);
    const range = await studiesAs(researcher, `&StudyDate=${shifted}-`);
    expect(range).toHaveLength(2);
  });

  it('matches series dates and instance date-times on the shifted values too', async () => {
    const shifted = (await studiesAs(researcher)).map((s) => String(value(s, '00080020'))).sort()[0];
    const series = await get(t, researcher, `/dicomweb/series?SeriesDate=${shifted}`).set(QIDO);
    expect(series.status).toBe(200);
    expect(series.body).toHaveLength(1);
    expect(value((series.body as DicomJson[])[0], '00080021')).toBe(shifted);
    expect((await get(t, researcher, '/dicomweb/series?SeriesDate=20200110').set(QIDO)).body).toHaveLength(0);
    const instances = await get(t, researcher, `/dicomweb/instances?AcquisitionDateTime=${shifted}1015-${shifted}1016&includefield=AcquisitionDateTime`).set(QIDO);
    expect(instances.status).toBe(200);
    expect(instances.body).toHaveLength(1);
    expect(String(value((instances.body as DicomJson[])[0], '0008002A'))).toBe(`${shifted}101500`);
    expect((await get(t, researcher, '/dicomweb/instances?AcquisitionDateTime=20200110101500').set(QIDO)).body).toHaveLength(0);
  });

  it('gives the same study different UIDs in two projects and the same UIDs on every request', async () => {
    const p1 = await deidIdsOf(researcher);
    const again = await deidIdsOf(researcher);
    const [p2] = await studiesAs(researcherP2);
    expect(again).toEqual(p1);
    const p1Studies = (await studiesAs(researcher)).map((s) => value(s, '0020000D'));
    expect(p1Studies).not.toContain(value(p2, '0020000D'));
    expect(String(value(p2, '0020000D'))).toMatch(/^2\.25\./);
  });

  it('matches PatientID and PatientName on the PatientKey, never on the MRN or name', async () => {
    const [study] = await studiesAs(researcher);
    const key = String(value(study, '00100020'));
    expect(await studiesAs(researcher, `&PatientID=${key}`)).toHaveLength(2);
    expect(await studiesAs(researcher, `&PatientID=${encodeURIComponent(patientID)}`)).toHaveLength(0);
    expect(await studiesAs(researcher, `&PatientName=${encodeURIComponent(patientName)}`)).toHaveLength(0);
    expect(await studiesAs(researcher, `&PatientName=${encodeURIComponent(key.slice(0, 4))}*`)).toHaveLength(2);
    expect(await studiesAs(researcher, `&PatientName=${encodeURIComponent(key.slice(0, 4).toLowerCase())}&fuzzymatching=true`)).toHaveLength(2);
  });

  it('refuses match keys on removed attributes (400) instead of letting them probe hidden values', async () => {
    for (const key of [`AccessionNumber=${accession}`, 'ReferringPhysicianName=Smith*', 'InstitutionName=General*']) {
      const res = await get(t, researcher, `/dicomweb/studies?${key}`).set(QIDO);
      expect(res.status).toBe(400);
      expect(errorText(res)).toMatch(/cannot be used as a match key by researchers/);
    }
  });

  it('resolves de-identified UIDs in match keys and paths; original UIDs find nothing (404 in paths)', async () => {
    const ids = await deidIdsOf(researcher);
    expect(await studiesAs(researcher, `&StudyInstanceUID=${ids.study}`)).toHaveLength(1);
    expect(await studiesAs(researcher, `&StudyInstanceUID=${first.studyInstanceUID}`)).toHaveLength(0);
    const meta = await get(t, researcher, `/dicomweb/studies/${first.studyInstanceUID}/metadata`);
    expect(meta.status).toBe(404);
    expect(errorText(meta)).toContain('not found');
    const series = await get(t, researcher, `/dicomweb/studies/${first.studyInstanceUID}/series`).set(QIDO);
    expect(series.status).toBe(200);
    expect(series.body).toEqual([]);
    const wrongProject = await get(t, researcherP2, `/dicomweb/studies/${ids.study}/metadata`);
    expect(wrongProject.status).toBe(404);
  });

  it('de-identifies metadata at study, series and instance level, with BulkDataURIs on de-identified paths that resolve', async () => {
    const ids = await deidIdsOf(researcher);
    for (const path of [`/studies/${ids.study}`, `/studies/${ids.study}/series/${ids.series}`, `/studies/${ids.study}/series/${ids.series}/instances/${ids.sop}`]) {
      const res = await get(t, researcher, `/dicomweb${path}/metadata`);
      if (res.status !== 200) throw new Error(`${path}: ${res.status} ${errorText(res)}`);
      expectNoIdentifiers(res.text);
      const datasets = res.body as DicomJson[];
      expect(datasets.length).toBeGreaterThan(0);
      for (const d of datasets) expect(value(d, '00120062')).toBe('YES');
    }
    const [instance] = (await get(t, researcher, `/dicomweb/studies/${ids.study}/series/${ids.series}/instances/${ids.sop}/metadata`)).body as DicomJson[];
    const uri = instance['7FE00010']?.BulkDataURI;
    expect(uri).toContain(`/studies/${ids.study}/series/${ids.series}/instances/${ids.sop}/bulkdata/7FE00010`);
    const bulk = await get(t, researcher, new URL(String(uri)).pathname).set('Accept', 'application/octet-stream').buffer(true);
    expect(bulk.status).toBe(200);
  });

  it('serves frames, rendered images and thumbnails with unchanged pixels under de-identified UIDs', async () => {
    const ids = await deidIdsOf(researcher, 'earlier');
    const path = `/dicomweb/studies/${ids.study}/series/${ids.series}/instances/${ids.sop}`;
    const adminPath = `/dicomweb/studies/${first.studyInstanceUID}/series/${first.seriesInstanceUID}/instances/${first.sopInstanceUID}`;
    const binary = (r: request.Test) => r.buffer(true).parse((res, done) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => done(null, Buffer.concat(chunks)));
    });
    const frame = await binary(get(t, researcher, `${path}/frames/1`).set('Accept', 'application/octet-stream'));
    const adminFrame = await binary(request(t.http).get(`${adminPath}/frames/1`).set('Accept', 'application/octet-stream'));
    expect(frame.status).toBe(200);
    expect(Buffer.compare(frame.body as Buffer, adminFrame.body as Buffer)).toBe(0);
    for (const suffix of ['/rendered', '/thumbnail', '/frames/1/rendered']) {
      const res = await binary(get(t, researcher, `${path}${suffix}`).set('Accept', 'image/png'));
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toMatch(/^image\/png/);
    }
    expect((await get(t, researcher, `${adminPath}/frames/1`)).status).toBe(404);
    expect((await get(t, researcher, `${adminPath}/rendered`)).status).toBe(404);
  });

  it('withholds burned-in annotation instances until a data manager clears them, and says so without naming them', async () => {
    const [study] = await studiesAs(researcher, `&StudyDate=${(await studiesAs(researcher)).map((s) => String(value(s, '00080020'))).sort()[0]}`);
    const studyUid = String(value(study, '0020000D'));
    expect(value(study, '00201208')).toBe(1);
    expect(study['00080061']?.Value).not.toContain('US');
    const res = await get(t, researcher, `/dicomweb/studies/${studyUid}/instances`).set(QIDO);
    expect(res.status).toBe(200);
    expect((res.body as DicomJson[]).map((d) => value(d, '00080060'))).not.toContain('US');
    expect(res.body).toHaveLength(1);
    expect(String(res.headers.warning)).toContain('1 instance withheld pending burned-in annotation review');
    // Paging counts only what a researcher may see: the withheld instance takes no place.
    const page = async (offset: number) => (await get(t, researcher, `/dicomweb/studies/${studyUid}/instances?limit=1&offset=${offset}`).set(QIDO)).body as DicomJson[];
    expect(await page(0)).toHaveLength(1);
    expect(await page(1)).toHaveLength(0);
    const studyQido = await get(t, researcher, `/dicomweb/studies?StudyInstanceUID=${studyUid}`).set(QIDO);
    expect(String(studyQido.headers.warning)).toContain('withheld pending burned-in annotation review');
    const retrieve = await get(t, researcher, `/dicomweb/studies/${studyUid}/metadata`);
    expect(retrieve.body as DicomJson[]).toHaveLength(1);
    // Researchers never learn the withheld instance's UID; even its mapped UID is refused on every path.
    const map = t.app.privacy.uidMapper('P1');
    const hidden = `/dicomweb/studies/${studyUid}/series/${map(burned.seriesInstanceUID)}/instances/${map(burned.sopInstanceUID)}`;
    for (const suffix of ['', '/metadata', '/frames/1', '/rendered', '/thumbnail', '/bulkdata/7FE00010']) {
      const res = await get(t, researcher, `${hidden}${suffix}`);
      expect(res.status).toBe(404);
      expect(errorText(res)).toContain('withheld from researchers pending burned-in annotation review');
    }
    const seriesRetrieve = await get(t, researcher, `/dicomweb/studies/${studyUid}/series/${map(burned.seriesInstanceUID)}`);
    expect(seriesRetrieve.status).toBe(404);

    const dm = await t.token('data-manager', ['P1']);
    const clear = await request(t.app.express).post('/privacy/burned-in-clearances').set('Authorization', `Bearer ${dm}`).send({ sopInstanceUID: burned.sopInstanceUID, note: 'reviewed' });
    expect(clear.status).toBe(201);
    const after = await get(t, researcher, `/dicomweb/studies/${studyUid}/instances`).set(QIDO);
    expect(after.body).toHaveLength(2);
    expect(after.headers.warning).toBeUndefined();
    const [cleared] = await studiesAs(researcher, `&StudyInstanceUID=${studyUid}`);
    expect(value(cleared, '00201208')).toBe(2);
    expect(cleared['00080061']?.Value).toContain('US');
    expect((await get(t, researcher, `${hidden}/metadata`)).status).toBe(200);

    // Withdrawing the clearance withholds the instance again at once (no cached "visible" survives it).
    const withdraw = await request(t.app.express).delete(`/privacy/burned-in-clearances/${burned.sopInstanceUID}`).set('Authorization', `Bearer ${dm}`);
    expect(withdraw.status).toBe(204);
    const again = await get(t, researcher, `${hidden}/metadata`);
    expect(again.status).toBe(404);
    expect(errorText(again)).toContain('withheld from researchers pending burned-in annotation review');
  });

  it('de-identifies for a PI of the project too', async () => {
    const pi = await t.token('pi', ['P1']);
    const res = await get(t, pi, '/dicomweb/studies?includefield=all').set(QIDO);
    expect(res.status).toBe(200);
    expect(res.body).toHaveLength(2);
    expectNoIdentifiers(res.text);
  });

  it('still shows an admin everything identified', async () => {
    const res = await request(t.http).get(`/dicomweb/studies?PatientID=${encodeURIComponent(patientID)}&includefield=all`).set(QIDO);
    expect(res.status).toBe(200);
    expect(res.text).toContain(patientID);
    expect(res.text).toContain(first.studyInstanceUID);
    const meta = await request(t.http).get(`/dicomweb/studies/${first.studyInstanceUID}/metadata`);
    expect(meta.status).toBe(200);
    expect(meta.text).toContain(accession);
  });
});
