import express, { type Express } from 'express';
import fs from 'node:fs';
import request from 'supertest';
import { registerWadoRoutes } from '../../../src/dicomweb/wado-routes';
import { dicomwebErrorHandler } from '../../../src/dicomweb/routes';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { sharedData, startTestApp, type TestApp } from '../../helpers/test-app';

// ---- helpers

function wadoApp(t: TestApp, publicBaseUrl?: string): Express {
  const router = express.Router();
  registerWadoRoutes(router, { db: t.app.db, blobs: t.app.blobs, logger: t.app.logger, publicBaseUrl });
  router.use(dicomwebErrorHandler({ logger: t.app.logger }));
  const app = express();
  app.use('/dicomweb', router);
  return app;
}

async function stow(t: TestApp, files: Buffer[]): Promise<void> {
  const { body, contentType } = buildMultipart(files);
  const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).send(body);
  if (res.status !== 200) throw new Error(`STOW answered ${res.status}: ${JSON.stringify(res.body).slice(0, 500)}`);
}

type DicomJson = Record<string, { vr: string; Value?: unknown[]; BulkDataURI?: string; InlineBinary?: string }>;

/** Checks the DICOM JSON Model shape (PS3.18 F.2): 8-hex-digit keys, a VR, at most one of Value/BulkDataURI/InlineBinary. */
function expectDicomJson(dataset: DicomJson): void {
  for (const [tag, element] of Object.entries(dataset)) {
    expect(tag).toMatch(/^[0-9A-F]{8}$/);
    expect(element.vr).toMatch(/^[A-Z]{2}$/);
    const valueKinds = ['Value', 'BulkDataURI', 'InlineBinary'].filter((k) => k in element);
    expect(valueKinds.length).toBeLessThanOrEqual(1);
    if (element.vr === 'SQ') for (const item of (element.Value ?? []) as DicomJson[]) expectDicomJson(item);
  }
}

const value = (d: DicomJson, tag: string) => d[tag]?.Value?.[0];
const errorText = (res: request.Response) => res.body['00000902']?.Value?.[0] as string;

// ---- tests

describe('WADO-RS retrieve metadata (PS3.18 10.4.1.1.2)', () => {
  let t: TestApp;
  let app: Express;
  const study = newUid();
  const series = [newUid(), newUid()];
  const instances = Array.from({ length: 6 }, (_, i) =>
    createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: series[i % 2], seriesNumber: (i % 2) + 1, instanceNumber: i + 1, rows: 24, columns: 24 }),
  );
  const pdf = fs.readFileSync(sharedData('dicom/modalities/orthanc__sample-pdf.dcm'));

  beforeAll(async () => {
    t = await startTestApp();
    app = t.http;
    await stow(t, instances.map((i) => i.bytes));
    await stow(t, [pdf]);
  });
  afterAll(async () => {
    await t.close();
  });

  test('study metadata is a DICOM JSON array with one object per instance', async () => {
    const res = await request(app).get(`/dicomweb/studies/${study}/metadata`);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/dicom\+json/);
    expect(res.body).toHaveLength(6);
    for (const d of res.body as DicomJson[]) expectDicomJson(d);
    expect(new Set((res.body as DicomJson[]).map((d) => value(d, '00080018')))).toEqual(new Set(instances.map((i) => i.sopInstanceUID)));
  });

  test('instances come in series then instance number order', async () => {
    const res = await request(app).get(`/dicomweb/studies/${study}/metadata`);
    expect((res.body as DicomJson[]).map((d) => value(d, '00200013'))).toEqual([1, 3, 5, 2, 4, 6]);
  });

  test('Pixel Data carries an absolute BulkDataURI to its instance bulk data', async () => {
    const i = instances[1];
    const res = await request(app).get(`/dicomweb/studies/${study}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}/metadata`);
    const uri = (res.body as DicomJson[])[0]['7FE00010'].BulkDataURI;
    expect(uri).toMatch(new RegExp(`^http://127\\.0\\.0\\.1:\\d+/dicomweb/studies/${study}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}/bulkdata/7FE00010$`));
    const pixels = await request(app).get(new URL(uri!).pathname).set('Accept', 'application/octet-stream');
    expect(pixels.status).toBe(200);
    expect(Buffer.from(pixels.body).equals(i.bytes.subarray(i.bytes.length - 24 * 24 * 2))).toBe(true);
  });

  test('BulkDataURIs follow X-Forwarded-Proto, -Host and -Prefix', async () => {
    const i = instances[0];
    const res = await request(app)
      .get(`/dicomweb/studies/${study}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}/metadata`)
      .set('X-Forwarded-Proto', 'https')
      .set('X-Forwarded-Host', 'pacs.example.org')
      .set('X-Forwarded-Prefix', '/lake');
    expect((res.body as DicomJson[])[0]['7FE00010'].BulkDataURI).toBe(
      `https://pacs.example.org/lake/dicomweb/studies/${study}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}/bulkdata/7FE00010`,
    );
  });

  test('PUBLIC_BASE_URL wins over the request', async () => {
    const i = instances[0];
    const res = await request(wadoApp(t, 'https://lake.example'))
      .get(`/dicomweb/studies/${study}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}/metadata`);
    expect((res.body as DicomJson[])[0]['7FE00010'].BulkDataURI).toMatch(/^https:\/\/lake\.example\/dicomweb\/studies\//);
  });

  test('each instance names its stored transfer syntax in AvailableTransferSyntaxUID (0008,3002)', async () => {
    const res = await request(app).get(`/dicomweb/studies/${study}/series/${series[0]}/metadata`);
    expect(res.body).toHaveLength(3);
    expect((res.body as DicomJson[]).map((d) => d['00083002'])).toEqual(new Array(3).fill({ vr: 'UI', Value: ['1.2.840.10008.1.2.1'] }));
  });

  test('keys are in ascending tag order in the response text', async () => {
    const res = await request(app).get(`/dicomweb/studies/${study}/series/${series[0]}/metadata`).buffer(true);
    const first = res.text.slice(1, res.text.indexOf('}]') + 1);
    const keys = [...first.matchAll(/(?:^\{|, )"([0-9A-F]{8})": \{"vr"/g)].map((m) => m[1]);
    expect(keys.length).toBeGreaterThan(10);
    expect([...keys].sort()).toEqual(keys);
  });

  test('a non-pixel bulk value is a BulkDataURI, never inline bytes of it', async () => {
    const row = await t.app.db.knex('instances as i').join('studies as s', 's.id', 'i.study_pk').where('i.sop_class_uid', '1.2.840.10008.5.1.4.1.1.104.1').first('s.study_uid');
    const res = await request(app).get(`/dicomweb/studies/${row.study_uid}/metadata`);
    const element = (res.body as DicomJson[])[0]['00420011'];
    expect(element).toEqual({ vr: 'OB', BulkDataURI: expect.stringMatching(/^http:\/\/.*\/bulkdata\/00420011$/) });
  });

  test('metadata never reads a blob', async () => {
    const read = jest.spyOn(t.app.blobs, 'read');
    const readRange = jest.spyOn(t.app.blobs, 'readRange');
    const readBuffer = jest.spyOn(t.app.blobs, 'readBuffer');
    try {
      expect((await request(app).get(`/dicomweb/studies/${study}/metadata`)).status).toBe(200);
      expect(read).not.toHaveBeenCalled();
      expect(readRange).not.toHaveBeenCalled();
      expect(readBuffer).not.toHaveBeenCalled();
    } finally {
      read.mockRestore();
      readRange.mockRestore();
      readBuffer.mockRestore();
    }
  });

  test('application/dicom+xml is 406, naming what is offered', async () => {
    const res = await request(app).get(`/dicomweb/studies/${study}/metadata`).set('Accept', 'multipart/related; type="application/dicom+xml"');
    expect(res.status).toBe(406);
    expect(errorText(res)).toMatch(/application\/dicom\+json only/);
  });

  test('metadata of a missing series is 404', async () => {
    const res = await request(app).get(`/dicomweb/studies/${study}/series/1.2.3/metadata`);
    expect(res.status).toBe(404);
    expect(errorText(res)).toMatch(/^series 1\.2\.3 not found/);
  });
});

describe('WADO-RS metadata of a large study', () => {
  let t: TestApp;
  let app: Express;
  const study = newUid();
  const count = 450; // more than two database pages
  beforeAll(async () => {
    t = await startTestApp();
    app = t.http;
    const series = newUid();
    for (let b = 0; b < count; b += 150) {
      const batch = Array.from({ length: Math.min(150, count - b) }, (_, i) =>
        createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: series, instanceNumber: b + i + 1, rows: 4, columns: 4 }).bytes,
      );
      await stow(t, batch);
    }
  });
  afterAll(async () => {
    await t.close();
  });

  test('is streamed page by page into one complete, ordered array', async () => {
    const res = await request(app).get(`/dicomweb/studies/${study}/metadata`);
    expect(res.status).toBe(200);
    expect(res.headers['transfer-encoding']).toBe('chunked');
    expect((res.body as DicomJson[]).map((d) => value(d, '00200013'))).toEqual(Array.from({ length: count }, (_, i) => i + 1));
  });
});
