/**
 * The sentinel proof for DICOMweb (PS3.15 Annex E at retrieve time): an instance filling every
 * confidentiality-profile attribute with PHI_SENTINEL values is stored by an admin; a researcher
 * then walks every DICOMweb path and no byte of any answer carries the sentinel, the original
 * PatientID or an original UID. References inside a SEG resolve under the mapped UIDs.
 */
import fs from 'node:fs';
import request from 'supertest';
import { createProject } from '../../../src/auth/project-store';
import { buildMultipart } from '../../helpers/multipart-body';
import { buildPhiSentinelInstance, PHI_SENTINEL, SENTINEL_DATE, SENTINEL_UID_ROOT } from '../../helpers/phi-sentinel-dicom';
import { sharedData, startTestApp, type TestApp } from '../../helpers/test-app';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const dcmjs = require('dcmjs');

type DicomJson = Record<string, { vr: string; Value?: unknown[]; BulkDataURI?: string }>;

const QIDO = { Accept: 'application/dicom+json' };
const value = (d: DicomJson, tag: string) => d[tag]?.Value?.[0];

async function stow(t: TestApp, project: string, files: Buffer[]): Promise<void> {
  const { body, contentType } = buildMultipart(files);
  const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).set('X-Project', project).send(body);
  if (res.status !== 200) throw new Error(`STOW answered ${res.status}: ${JSON.stringify(res.body).slice(0, 500)}`);
}

/** GET as `token`, the body as raw bytes whatever its type. */
async function fetchBytes(t: TestApp, token: string, path: string, accept: string): Promise<{ status: number; headers: Record<string, string>; bytes: Buffer }> {
  const res = await request(t.app.express)
    .get(path)
    .set('Authorization', `Bearer ${token}`)
    .set('Accept', accept)
    .buffer(true)
    .parse((r, done) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('end', () => done(null, Buffer.concat(chunks)));
    });
  return { status: res.status, headers: res.headers as Record<string, string>, bytes: res.body as Buffer };
}

/** The parts of a multipart/related body (PS3.18 8.6.1.2). */
function multipartParts(bytes: Buffer, contentType: string): Buffer[] {
  const boundary = /boundary="?([^";]+)"?/.exec(contentType)?.[1];
  if (!boundary) throw new Error(`no boundary in ${contentType}`);
  const delimiter = Buffer.from(`--${boundary}`);
  const parts: Buffer[] = [];
  let at = bytes.indexOf(delimiter);
  while (at >= 0) {
    const next = bytes.indexOf(delimiter, at + delimiter.length);
    if (next < 0) break;
    const part = bytes.subarray(at + delimiter.length, next);
    const headerEnd = part.indexOf('\r\n\r\n');
    parts.push(part.subarray(headerEnd + 4, part.length - 2));
    at = next;
  }
  return parts;
}

function readDicom(bytes: Buffer): Record<string, unknown> {
  const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);
  const file = dcmjs.data.DicomMessage.readFile(ab as ArrayBuffer);
  return dcmjs.data.DicomMetaDictionary.naturalizeDataset(file.dict) as Record<string, unknown>;
}

describe('DICOMweb researcher views: PHI sentinel on every path', () => {
  let t: TestApp;
  let researcher: string;
  const sentinel = buildPhiSentinelInstance({ instanceNumber: 1 });
  const sibling = buildPhiSentinelInstance({
    instanceNumber: 2,
    studyInstanceUID: sentinel.studyInstanceUID,
    seriesInstanceUID: sentinel.seriesInstanceUID,
    referencedSopInstanceUID: sentinel.sopInstanceUID,
  });
  const patientId = String((sentinel.json['00100020']?.Value ?? [''])[0]);
  const segDir = 'dicom/series/dcmqi-23x38x3';
  const segFiles = ['image/IMG0001.dcm', 'image/IMG0002.dcm', 'image/IMG0003.dcm', 'seg/label.seg'].map((f) => fs.readFileSync(sharedData(`${segDir}/${f}`)));
  let ids: { study: string; series: string; sop: string };

  beforeAll(async () => {
    t = await startTestApp();
    await createProject(t.app.db.knex, { id: 'P1', name: 'Project one' });
    await stow(t, 'P1', [sentinel.bytes, sibling.bytes]);
    await stow(t, 'P1', segFiles);
    researcher = await t.token('researcher', ['P1']);
    // Secondary captures are withheld until reviewed for burned-in annotation (PS3.15 E.3.1).
    const dm = await t.token('data-manager', ['P1']);
    for (const sop of [sentinel.sopInstanceUID, sibling.sopInstanceUID]) {
      const res = await request(t.app.express).post('/privacy/burned-in-clearances').set('Authorization', `Bearer ${dm}`).send({ sopInstanceUID: sop });
      if (res.status !== 201) throw new Error(`clearance answered ${res.status}: ${res.text}`);
    }
    const studies = (await request(t.app.express).get('/dicomweb/studies?ModalitiesInStudy=OT').set('Authorization', `Bearer ${researcher}`).set(QIDO)).body as DicomJson[];
    const study = String(value(studies[0], '0020000D'));
    const instances = (await request(t.app.express).get(`/dicomweb/studies/${study}/instances`).set('Authorization', `Bearer ${researcher}`).set(QIDO)).body as DicomJson[];
    const first = instances.find((i) => value(i, '00200013') === 1) ?? instances[0];
    ids = { study, series: String(value(first, '0020000E')), sop: String(value(first, '00080018')) };
  });
  afterAll(() => t?.close());

  function expectClean(path: string, bytes: Buffer): void {
    const text = bytes.toString('latin1');
    const leaks = [PHI_SENTINEL, SENTINEL_UID_ROOT, SENTINEL_DATE, patientId].filter((s) => s && text.includes(s));
    if (leaks.length > 0) throw new Error(`${path} leaks ${leaks.join(', ')}: …${text.slice(Math.max(0, text.indexOf(leaks[0]) - 80), text.indexOf(leaks[0]) + 80)}…`);
  }

  it('sentinel fixture is stored identified (the admin sees the sentinel)', async () => {
    const res = await request(t.http).get(`/dicomweb/studies/${sentinel.studyInstanceUID}/metadata`);
    expect(res.status).toBe(200);
    expect(res.text).toContain(PHI_SENTINEL);
    expect(ids.study).toMatch(/^2\.25\./);
  });

  it('leaks nothing through the six QIDO-RS resources with includefield=all', async () => {
    const paths = [
      '/dicomweb/studies',
      '/dicomweb/series',
      '/dicomweb/instances',
      `/dicomweb/studies/${ids.study}/series`,
      `/dicomweb/studies/${ids.study}/instances`,
      `/dicomweb/studies/${ids.study}/series/${ids.series}/instances`,
    ];
    for (const path of paths) {
      const res = await fetchBytes(t, researcher, `${path}?includefield=all`, 'application/dicom+json');
      expect(res.status).toBe(200);
      expect(JSON.parse(res.bytes.toString('utf8')).length).toBeGreaterThan(0);
      expectClean(path, res.bytes);
      expectClean(`${path} headers`, Buffer.from(JSON.stringify(res.headers)));
    }
  });

  it('leaks nothing through metadata at study, series and instance level', async () => {
    for (const path of [`/studies/${ids.study}`, `/studies/${ids.study}/series/${ids.series}`, `/studies/${ids.study}/series/${ids.series}/instances/${ids.sop}`]) {
      const res = await fetchBytes(t, researcher, `/dicomweb${path}/metadata`, 'application/dicom+json');
      expect(res.status).toBe(200);
      expectClean(path, res.bytes);
      const datasets = JSON.parse(res.bytes.toString('utf8')) as DicomJson[];
      for (const d of datasets) expect(value(d, '00120062')).toBe('YES');
    }
  });

  it('leaks nothing through study, series and instance retrieve, and each part is a de-identified DICOM file', async () => {
    for (const path of [`/studies/${ids.study}`, `/studies/${ids.study}/series/${ids.series}`, `/studies/${ids.study}/series/${ids.series}/instances/${ids.sop}`]) {
      const res = await fetchBytes(t, researcher, `/dicomweb${path}`, 'multipart/related; type="application/dicom"; transfer-syntax=*');
      expect(res.status).toBe(200);
      expectClean(path, res.bytes);
      const parts = multipartParts(res.bytes, res.headers['content-type']);
      expect(parts.length).toBeGreaterThan(0);
      for (const part of parts) {
        const ds = readDicom(part);
        expect(ds.PatientIdentityRemoved).toBe('YES');
        expect(String(ds.StudyInstanceUID)).toBe(ids.study);
      }
    }
    const single = await fetchBytes(t, researcher, `/dicomweb/studies/${ids.study}/series/${ids.series}/instances/${ids.sop}`, 'application/dicom');
    expect(single.status).toBe(200);
    expectClean('single part', single.bytes);
    const ds = readDicom(single.bytes);
    expect(ds.SOPInstanceUID).toBe(ids.sop);
    // Pixel data streams through unchanged.
    expect(single.bytes.includes(sentinel.pixelData)).toBe(true);
  });

  it('refuses a researcher a transcoded retrieve rather than send a header that is not de-identified (406)', async () => {
    const res = await fetchBytes(t, researcher, `/dicomweb/studies/${ids.study}/series/${ids.series}/instances/${ids.sop}`, 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50');
    expect(res.status).toBe(406);
    expect(res.bytes.toString('utf8')).toContain('de-identified instances are offered in their stored transfer syntax only');
  });

  it('leaks nothing through frames, pixel bulk data, rendered and thumbnail', async () => {
    const base = `/dicomweb/studies/${ids.study}/series/${ids.series}/instances/${ids.sop}`;
    const frame = await fetchBytes(t, researcher, `${base}/frames/1`, 'application/octet-stream');
    expect(frame.status).toBe(200);
    expect(Buffer.compare(frame.bytes, sentinel.pixelData)).toBe(0);
    const bulk = await fetchBytes(t, researcher, `${base}/bulkdata/7FE00010`, 'application/octet-stream');
    expect(bulk.status).toBe(200);
    expect(Buffer.compare(bulk.bytes, sentinel.pixelData)).toBe(0);
    for (const suffix of ['/rendered', '/thumbnail', '/frames/1/rendered', '/frames/1/thumbnail']) {
      const res = await fetchBytes(t, researcher, `${base}${suffix}`, 'image/png');
      expect(res.status).toBe(200);
      expectClean(suffix, res.bytes);
    }
    for (const suffix of ['/rendered', '/thumbnail']) {
      const res = await fetchBytes(t, researcher, `/dicomweb/studies/${ids.study}${suffix}`, suffix === '/rendered' ? 'multipart/related; type="image/png"' : 'image/png');
      expect(res.status).toBe(200);
      expectClean(`study ${suffix}`, res.bytes);
    }
  });

  it('answers 404 for the bulk data of an attribute de-identification removes', async () => {
    // Curve Data (50xx,3000) is removed by the profile (X); the stored bytes still hold it.
    const tag = '50003000';
    const admin = await fetchBytes(t, t.adminToken, `/dicomweb/studies/${sentinel.studyInstanceUID}/series/${sentinel.seriesInstanceUID}/instances/${sentinel.sopInstanceUID}/bulkdata/${tag}`, 'application/octet-stream');
    expect(admin.status).toBe(200);
    expect(admin.bytes.toString('latin1')).toContain(PHI_SENTINEL);
    const res = await fetchBytes(t, researcher, `/dicomweb/studies/${ids.study}/series/${ids.series}/instances/${ids.sop}/bulkdata/${tag}`, 'application/octet-stream');
    expect(res.status).toBe(404);
    expect(res.bytes.toString('utf8')).toContain('removed by de-identification');
    expectClean('removed bulk data', res.bytes);
  });

  it('answers 404 for original UIDs in a researcher path, without echoing other originals', async () => {
    const paths = [
      `/dicomweb/studies/${sentinel.studyInstanceUID}/metadata`,
      `/dicomweb/studies/${ids.study}/series/${sentinel.seriesInstanceUID}/metadata`,
      `/dicomweb/studies/${ids.study}/series/${ids.series}/instances/${sentinel.sopInstanceUID}`,
      `/dicomweb/studies/${sentinel.studyInstanceUID}/series/${sentinel.seriesInstanceUID}/instances/${sentinel.sopInstanceUID}/frames/1`,
    ];
    for (const path of paths) {
      const res = await fetchBytes(t, researcher, path, '*/*');
      expect(res.status).toBe(404);
    }
  });

  it('keeps references inside a SEG resolvable: each referenced instance is retrievable under its mapped UIDs', async () => {
    const studies = (await request(t.app.express).get('/dicomweb/studies?ModalitiesInStudy=SEG').set('Authorization', `Bearer ${researcher}`).set(QIDO)).body as DicomJson[];
    expect(studies).toHaveLength(1);
    const study = String(value(studies[0], '0020000D'));
    const [seg] = (await request(t.app.express).get(`/dicomweb/studies/${study}/instances?Modality=SEG`).set('Authorization', `Bearer ${researcher}`).set(QIDO)).body as DicomJson[];
    const segPath = `/dicomweb/studies/${study}/series/${value(seg, '0020000E')}/instances/${value(seg, '00080018')}`;
    const [segMeta] = (await request(t.app.express).get(`${segPath}/metadata`).set('Authorization', `Bearer ${researcher}`)).body as DicomJson[];
    const refSeries = (segMeta['00081115']?.Value ?? []) as DicomJson[];
    expect(refSeries.length).toBeGreaterThan(0);
    let checked = 0;
    for (const series of refSeries) {
      const seriesUid = String(value(series, '0020000E'));
      for (const ref of (series['0008114A']?.Value ?? []) as DicomJson[]) {
        const sop = String(value(ref, '00081155'));
        expect(sop).toMatch(/^2\.25\./);
        const res = await request(t.app.express).get(`/dicomweb/studies/${study}/series/${seriesUid}/instances/${sop}/metadata`).set('Authorization', `Bearer ${researcher}`);
        expect(res.status).toBe(200);
        expect(value((res.body as DicomJson[])[0], '00080018')).toBe(sop);
        checked++;
      }
    }
    expect(checked).toBe(3);
    // The sibling sentinel's Referenced Image Sequence names the first instance by its mapped UID too.
    const siblingMeta = (await request(t.app.express).get(`/dicomweb/studies/${ids.study}/metadata`).set('Authorization', `Bearer ${researcher}`)).body as DicomJson[];
    const referenced = siblingMeta.flatMap((d) => ((d['00081140']?.Value ?? []) as DicomJson[]).map((item) => value(item, '00081155')));
    expect(referenced).toContain(ids.sop);
  });
});
