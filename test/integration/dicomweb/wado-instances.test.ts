import express, { type Express } from 'express';
import fs from 'node:fs';
import http from 'node:http';
import { Readable } from 'node:stream';
import request from 'supertest';
import { registerWadoRoutes } from '../../../src/dicomweb/wado-routes';
import { dicomwebErrorHandler } from '../../../src/dicomweb/routes';
import { parseMediaType } from '../../../src/dicomweb/media-type';
import { readMultipart } from '../../../src/dicomweb/multipart';
import type { TranscodeHook, WadoServices } from '../../../src/dicomweb/wado-rs';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { sharedData, startTestApp, type TestApp } from '../../helpers/test-app';
import { descriptorsOpenOn } from '../../helpers/open-descriptors';
import { testBlobKind } from '../../helpers/test-env';
// dcmjs ships no type declarations.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const dcmjs = require('dcmjs');

// ---- helpers (each WADO test file keeps its own few lines, so files stay independent)

/** The app under test: the server itself once WADO-RS is wired in, else a router composed the same way. */
function wadoApp(t: TestApp, extra: Partial<WadoServices> = {}, before?: express.RequestHandler): Express {
  const router = express.Router();
  if (before) router.use(before);
  registerWadoRoutes(router, { db: t.app.db, blobs: t.app.blobs, logger: t.app.logger, ...extra });
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

/** supertest parser that keeps the body as bytes. */
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

const sopOf = (bytes: Buffer): string =>
  dcmjs.data.DicomMetaDictionary.naturalizeDataset(dcmjs.data.DicomMessage.readFile(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)).dict).SOPInstanceUID;

const errorText = (res: request.Response) => res.body['00000902']?.Value?.[0] as string;

// ---- tests

describe('WADO-RS retrieve instances (PS3.18 10.4.1.1.1)', () => {
  let t: TestApp;
  let app: Express;
  const study = newUid();
  const seriesA = newUid();
  const seriesB = newUid();
  const a1 = createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: seriesA, seriesNumber: 1, instanceNumber: 1, rows: 16, columns: 16 });
  const a2 = createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: seriesA, seriesNumber: 1, instanceNumber: 2, rows: 16, columns: 16 });
  const b1 = createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: seriesB, seriesNumber: 2, instanceNumber: 1, rows: 16, columns: 16, modality: 'MR' });
  const base = `/dicomweb/studies/${study}`;

  beforeAll(async () => {
    t = await startTestApp();
    app = t.http;
    await stow(t, [a1.bytes, a2.bytes, b1.bytes]);
  });
  afterAll(async () => {
    await t.close();
  });

  test('a study comes back as multipart application/dicom with every instance byte for byte', async () => {
    const res = await request(app).get(base).buffer(true).parse(binary);
    expect(res.status).toBe(200);
    expect(parseMediaType(res.headers['content-type'])).toMatchObject({ type: 'multipart/related', params: { type: 'application/dicom' } });
    const got = await parts(res.headers['content-type'], res.body);
    expect(got.map((p) => p.body)).toEqual([a1.bytes, a2.bytes, b1.bytes]);
  });

  test('each part names its transfer syntax and length', async () => {
    const res = await request(app).get(`${base}/series/${seriesB}/instances/${b1.sopInstanceUID}`).buffer(true).parse(binary);
    const [part] = await parts(res.headers['content-type'], res.body);
    expect(part.headers['content-type']).toBe('application/dicom; transfer-syntax=1.2.840.10008.1.2.1');
    expect(Number(part.headers['content-length'])).toBe(b1.bytes.length);
  });

  test('the response carries an exact Content-Length', async () => {
    const res = await request(app).get(base).buffer(true).parse(binary);
    expect(Number(res.headers['content-length'])).toBe(res.body.length);
  });

  test('a series holds only its own instances', async () => {
    const res = await request(app).get(`${base}/series/${seriesA}`).buffer(true).parse(binary);
    const got = await parts(res.headers['content-type'], res.body);
    expect(got.map((p) => sopOf(p.body))).toEqual([a1.sopInstanceUID, a2.sopInstanceUID]);
  });

  test('an instance can be asked for as single part application/dicom (PS3.18 8.7.3.2)', async () => {
    const res = await request(app).get(`${base}/series/${seriesA}/instances/${a2.sopInstanceUID}`).set('Accept', 'application/dicom').buffer(true).parse(binary);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('application/dicom; transfer-syntax=1.2.840.10008.1.2.1');
    expect(res.body.equals(a2.bytes)).toBe(true);
  });

  test('transfer-syntax=* and unquoted parameters are served as stored', async () => {
    const res = await request(app).get(base).set('Accept', 'multipart/related; type=application/dicom; transfer-syntax=*').buffer(true).parse(binary);
    expect(res.status).toBe(200);
    expect(await parts(res.headers['content-type'], res.body)).toHaveLength(3);
  });

  test('a lower-q alternative is used when the preferred one cannot be served', async () => {
    const res = await request(app)
      .get(base)
      .set('Accept', 'multipart/related; type="application/dicom+xml", multipart/related; type="application/dicom"; q=0.4')
      .buffer(true)
      .parse(binary);
    expect(res.status).toBe(200);
  });

  test('a transfer syntax the server cannot produce (JPEG baseline encoding) is 406 naming what is offered', async () => {
    const res = await request(app).get(base).set('Accept', 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50');
    expect(res.status).toBe(406);
    expect(errorText(res)).toMatch(/transfer-syntax=\* or 1\.2\.840\.10008\.1\.2\.1/);
  });

  test('single part application/dicom for a whole study is 406', async () => {
    const res = await request(app).get(base).set('Accept', 'application/dicom');
    expect(res.status).toBe(406);
    expect(errorText(res)).toMatch(/multipart\/related; type="application\/dicom"/);
  });

  test('a configured transcode hook is called for a different transfer syntax and its output served', async () => {
    const calls: Array<{ to: string; sop: string }> = [];
    const transcoder: TranscodeHook = {
      canTranscode: (from, to) => from === '1.2.840.10008.1.2.1' && to === '1.2.840.10008.1.2',
      async transcodeInstance({ instance, open }, to) {
        calls.push({ to, sop: instance.sopInstanceUID });
        const original = Buffer.concat(await (await open()).toArray());
        return Readable.from([Buffer.from('TRANSCODED:'), original]);
      },
      transcodeFrame: async () => Buffer.alloc(0),
    };
    const res = await request(wadoApp(t, { transcoder }))
      .get(`${base}/series/${seriesA}/instances/${a1.sopInstanceUID}`)
      .set('Accept', 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2')
      .buffer(true)
      .parse(binary);
    expect(res.status).toBe(200);
    const [part] = await parts(res.headers['content-type'], res.body);
    expect(part.headers['content-type']).toBe('application/dicom; transfer-syntax=1.2.840.10008.1.2');
    expect(part.body.equals(Buffer.concat([Buffer.from('TRANSCODED:'), a1.bytes]))).toBe(true);
    expect(calls).toEqual([{ to: '1.2.840.10008.1.2', sop: a1.sopInstanceUID }]);
  });

  test('HEAD answers the headers and no body', async () => {
    const res = await request(app).head(base);
    expect(res.status).toBe(200);
    expect(Number(res.headers['content-length'])).toBeGreaterThan(a1.bytes.length * 3);
    expect(res.text ?? '').toBe('');
  });

  test('404 names a missing study', async () => {
    const missing = newUid();
    const res = await request(app).get(`/dicomweb/studies/${missing}`);
    expect(res.status).toBe(404);
    expect(errorText(res)).toBe(`study ${missing} not found`);
  });

  test('404 names a missing series', async () => {
    const res = await request(app).get(`${base}/series/1.2.3`);
    expect(res.status).toBe(404);
    expect(errorText(res)).toMatch(/^series 1\.2\.3 not found in study/);
  });

  test('404 names a missing instance', async () => {
    const res = await request(app).get(`${base}/series/${seriesA}/instances/1.2.3`);
    expect(res.status).toBe(404);
    expect(errorText(res)).toMatch(/^instance 1\.2\.3 not found in series/);
  });

  test('a study outside restrictStudies answers exactly like a missing one', async () => {
    const restricted = wadoApp(t, {}, (_req, res, next) => {
      res.locals.restrictStudies = (qb: { whereNot: (c: string, v: string) => void }) => qb.whereNot('studies.study_uid', study);
      next();
    });
    const res = await request(restricted).get(base);
    expect(res.status).toBe(404);
    expect(errorText(res)).toBe(`study ${study} not found`);
  });

  test('an index row whose bytes are missing from the store is a 500 that says so, not a cut stream', async () => {
    const lost = createSyntheticInstance({ rows: 8, columns: 8 });
    await stow(t, [lost.bytes]);
    const row = await t.app.db.knex('instances').where({ sop_instance_uid: lost.sopInstanceUID }).first('blob_key');
    await t.app.blobs.delete(row.blob_key);
    const res = await request(app).get(`/dicomweb/studies/${lost.studyInstanceUID}`);
    expect(res.status).toBe(500);
    expect(errorText(res)).toBe(`the stored bytes ${row.blob_key} are missing from the blob store`);
  });

  test('a series of many small instances around large ones comes back whole, in instance order, with an exact length', async () => {
    // Small instances are read whole and several ahead; those past 1 MiB are streamed: both kinds interleave here.
    const study2 = newUid();
    const series2 = newUid();
    const sizes = Array.from({ length: 40 }, (_, n) => (n === 7 || n === 8 || n === 30 ? 1024 : 16));
    const made = sizes.map((side, n) =>
      createSyntheticInstance({ studyInstanceUID: study2, seriesInstanceUID: series2, seriesNumber: 1, instanceNumber: n + 1, rows: side, columns: side, bitsAllocated: 16 }),
    );
    expect(made[7].bytes.length).toBeGreaterThan(1024 * 1024);
    // Stored out of order, so the order comes from the index, not from arrival.
    await stow(t, [...made].reverse().map((m) => m.bytes));
    const res = await request(app).get(`/dicomweb/studies/${study2}/series/${series2}`).buffer(true).parse(binary);
    expect(res.status).toBe(200);
    expect(Number(res.headers['content-length'])).toBe(res.body.length);
    const got = await parts(res.headers['content-type'], res.body);
    expect(got.map((p) => sopOf(p.body))).toEqual(made.map((m) => m.sopInstanceUID));
    expect(got.every((p, n) => p.body.equals(made[n].bytes) && Number(p.headers['content-length']) === made[n].bytes.length)).toBe(true);
  });

  test('large instances streamed to several clients at once each come back byte for byte', async () => {
    // Past 4 MiB, so each is several reads into reused buffers; different seeds, so a buffer shared by mistake shows.
    const large = [3, 4, 5].map((seed) => createSyntheticInstance({ rows: 1024, columns: 1024, numberOfFrames: 5, seed }));
    expect(large[0].bytes.length).toBeGreaterThan(8 * 1024 * 1024);
    await stow(t, large.map((l) => l.bytes));
    const answers = await Promise.all([
      ...large.map((l) => request(app).get(`/dicomweb/studies/${l.studyInstanceUID}`).buffer(true).parse(binary)),
      ...large.map((l) =>
        request(app)
          .get(`/dicomweb/studies/${l.studyInstanceUID}/series/${l.seriesInstanceUID}/instances/${l.sopInstanceUID}`)
          .set('Accept', 'application/dicom')
          .buffer(true)
          .parse(binary),
      ),
    ]);
    for (let n = 0; n < large.length; n++) {
      const got = await parts(answers[n].headers['content-type'], answers[n].body);
      expect(got.length).toBe(1);
      expect(got[0].body.equals(large[n].bytes)).toBe(true);
      expect(answers[large.length + n].body.equals(large[n].bytes)).toBe(true);
    }
  });

  test('streaming a large instance again reads into the memory the last answer used, allocating none', async () => {
    const large = createSyntheticInstance({ rows: 1024, columns: 1024, numberOfFrames: 5, seed: 9 });
    await stow(t, [large.bytes]);
    const path = `/dicomweb/studies/${large.studyInstanceUID}`;
    await request(app).get(path).buffer(true).parse(binary);
    const allocations = jest.spyOn(Buffer, 'allocUnsafeSlow');
    try {
      const res = await request(app).get(path).buffer(true).parse(binary);
      expect(res.status).toBe(200);
      expect(allocations.mock.calls.filter(([size]) => size >= 1024 * 1024)).toEqual([]);
    } finally {
      allocations.mockRestore();
    }
  });

  test('clients that go away mid-instance leave no blob open', async () => {
    const big = createSyntheticInstance({ rows: 1024, columns: 1024, numberOfFrames: 5, seed: 11 });
    await stow(t, [big.bytes]);
    const { blob_key: key } = await t.app.db.knex('instances').where({ sop_instance_uid: big.sopInstanceUID }).first('blob_key');
    const openOnBlob = () => descriptorsOpenOn(key);
    const server = http.createServer(app).listen(0);
    try {
      const port = (server.address() as { port: number }).port;
      for (let n = 0; n < 5; n++) {
        await abortAfterFirstBytes(`http://127.0.0.1:${port}/dicomweb/studies/${big.studyInstanceUID}`);
      }
      // The server notices each close on its own schedule; every descriptor it opened must be closed.
      for (let i = 0; i < 100 && openOnBlob() > 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(openOnBlob()).toBe(0);
    } finally {
      server.close();
    }
  });

  // The S3 client reads each object into memory of its own: the claim is the filesystem store's.
  (testBlobKind() === 'fs' ? test : test.skip)('a second retrieve of a study of small instances reads them into reused memory, none allocated per instance', async () => {
    const study3 = newUid();
    const series3 = newUid();
    const made = Array.from({ length: 12 }, (_, n) =>
      createSyntheticInstance({ studyInstanceUID: study3, seriesInstanceUID: series3, seriesNumber: 1, instanceNumber: n + 1, rows: 64, columns: 64, bitsAllocated: 16, seed: n + 20 }),
    );
    await stow(t, made.map((m) => m.bytes));
    const path = `/dicomweb/studies/${study3}`;
    await request(app).get(path).buffer(true).parse(binary);
    const sizes = new Set(made.map((m) => m.bytes.length));
    const fast = jest.spyOn(Buffer, 'allocUnsafe');
    const slow = jest.spyOn(Buffer, 'allocUnsafeSlow');
    let res: request.Response;
    let perInstance: unknown[][];
    try {
      res = await request(app).get(path).buffer(true).parse(binary);
      perInstance = [...fast.mock.calls, ...slow.mock.calls].filter(([n]) => sizes.has(n as number));
    } finally {
      fast.mockRestore();
      slow.mockRestore();
    }
    expect(res.status).toBe(200);
    expect(Number(res.headers['content-length'])).toBe(res.body.length);
    const got = await parts(res.headers['content-type'], res.body);
    expect(got.map((p, n) => p.body.equals(made[n].bytes))).toEqual(made.map(() => true));
    expect(perInstance).toEqual([]);
  });

  test('a blob missing among the first instances of a study is a clean 500 that names it, not a cut stream', async () => {
    const study4 = newUid();
    const series4 = newUid();
    const made = Array.from({ length: 10 }, (_, n) =>
      createSyntheticInstance({ studyInstanceUID: study4, seriesInstanceUID: series4, seriesNumber: 1, instanceNumber: n + 1, rows: 32, columns: 32, seed: n + 40 }),
    );
    await stow(t, made.map((m) => m.bytes));
    const row = await t.app.db.knex('instances').where({ sop_instance_uid: made[3].sopInstanceUID }).first('blob_key');
    await t.app.blobs.delete(row.blob_key);
    const res = await request(app).get(`/dicomweb/studies/${study4}`);
    expect(res.status).toBe(500);
    expect(errorText(res)).toBe(`the stored bytes ${row.blob_key} are missing from the blob store`);
  });

  test('a blob missing further into a study of small instances cuts the answer before any byte of its part', async () => {
    const study6 = newUid();
    const series6 = newUid();
    // ~33 kB each: the missing one is read after the answer has begun, and more follow it.
    const made = Array.from({ length: 90 }, (_, n) =>
      createSyntheticInstance({ studyInstanceUID: study6, seriesInstanceUID: series6, seriesNumber: 1, instanceNumber: n + 1, rows: 128, columns: 128, bitsAllocated: 16, seed: n + 200 }),
    );
    await stow(t, made.map((m) => m.bytes));
    const row = await t.app.db.knex('instances').where({ sop_instance_uid: made[40].sopInstanceUID }).first('blob_key');
    await t.app.blobs.delete(row.blob_key);
    const server = http.createServer(app).listen(0);
    try {
      const port = (server.address() as { port: number }).port;
      const got = await new Promise<{ status: number; length: number; body: Buffer }>((resolve, reject) => {
        http
          .get(`http://127.0.0.1:${port}/dicomweb/studies/${study6}`, (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('error', () => undefined); // the cut: 'aborted'
            res.on('close', () => resolve({ status: res.statusCode ?? 0, length: Number(res.headers['content-length']), body: Buffer.concat(chunks) }));
          })
          .on('error', reject);
      });
      expect(got.status).toBe(200);
      expect(got.body.length).toBeLessThan(got.length);
      for (const m of made.slice(40)) expect(got.body.includes(m.sopInstanceUID)).toBe(false);
    } finally {
      server.close();
    }
    const after = await request(app).get(`${base}/series/${seriesA}/instances/${a1.sopInstanceUID}`).set('Accept', 'application/dicom').buffer(true).parse(binary);
    expect(after.body.equals(a1.bytes)).toBe(true);
  });

  test('clients that go away mid-study of small instances leave no blob open', async () => {
    const study5 = newUid();
    const series5 = newUid();
    const made = Array.from({ length: 60 }, (_, n) =>
      createSyntheticInstance({ studyInstanceUID: study5, seriesInstanceUID: series5, seriesNumber: 1, instanceNumber: n + 1, rows: 128, columns: 128, bitsAllocated: 16, seed: n + 60 }),
    );
    await stow(t, made.map((m) => m.bytes));
    const keys: string[] = await t.app.db.knex('instances').whereIn('sop_instance_uid', made.map((m) => m.sopInstanceUID)).pluck('blob_key');
    const openOnBlobs = () => keys.reduce((n, k) => n + descriptorsOpenOn(k), 0);
    const server = http.createServer(app).listen(0);
    try {
      const port = (server.address() as { port: number }).port;
      for (let n = 0; n < 5; n++) await abortAfterFirstBytes(`http://127.0.0.1:${port}/dicomweb/studies/${study5}`);
      for (let i = 0; i < 100 && openOnBlobs() > 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(openOnBlobs()).toBe(0);
      // And the server still answers the whole study.
      const res = await request(app).get(`/dicomweb/studies/${study5}`).buffer(true).parse(binary);
      expect((await parts(res.headers['content-type'], res.body)).length).toBe(made.length);
    } finally {
      server.close();
    }
  });

  test('a client that goes away mid-study leaves the server answering', async () => {
    const big = createSyntheticInstance({ rows: 1024, columns: 1024, numberOfFrames: 4 });
    await stow(t, [big.bytes]);
    const server = http.createServer(app).listen(0);
    try {
      const port = (server.address() as { port: number }).port;
      await abortAfterFirstBytes(`http://127.0.0.1:${port}/dicomweb/studies/${big.studyInstanceUID}`);
      const after = await request(app).get(`${base}/series/${seriesA}/instances/${a1.sopInstanceUID}`).set('Accept', 'application/dicom').buffer(true).parse(binary);
      expect(after.body.equals(a1.bytes)).toBe(true);
    } finally {
      server.close();
    }
  });
});

describe('WADO-RS retrieve of raw data sets (stored without File Meta Information)', () => {
  let t: TestApp;
  let app: Express;
  beforeAll(async () => {
    t = await startTestApp();
    app = t.http;
  });
  afterAll(async () => {
    await t.close();
  });

  test('an instance stored without file meta is served as valid Part 10 with the stored bytes after the meta group', async () => {
    // A 'streamed object' (no preamble, no meta), Implicit VR Little Endian; pydicom's no_meta.dcm is refused by STOW.
    const raw = fs.readFileSync(sharedData('dicom/malformed/fodicom__CR-MONO1-10-chest.dcm'));
    await stow(t, [raw]);
    const row = await t.app.db.knex('instances as i').join('studies as s', 's.id', 'i.study_pk').where({ 'i.has_file_meta': false }).first('i.*', 's.study_uid');
    expect(row.transfer_syntax_uid).toBe('1.2.840.10008.1.2');
    const path = `/dicomweb/studies/${row.study_uid}`;
    const res = await request(app).get(path).buffer(true).parse(binary);
    const [part] = await parts(res.headers['content-type'], res.body);
    expect(part.body.toString('latin1', 128, 132)).toBe('DICM');
    expect(part.body.subarray(part.body.length - raw.length).equals(raw)).toBe(true);
    expect(Number(part.headers['content-length'])).toBe(part.body.length);
    dcmjs.log.getLogger('validation.dcmjs').setLevel('silent'); // dcmjs complains about the dictionary's 'ox' VR of Implicit VR Pixel Data
    const parsed = dcmjs.data.DicomMessage.readFile(part.body.buffer.slice(part.body.byteOffset, part.body.byteOffset + part.body.length));
    dcmjs.log.getLogger('validation.dcmjs').setLevel('warn');
    const meta = dcmjs.data.DicomMetaDictionary.naturalizeDataset(parsed.meta);
    expect(meta.TransferSyntaxUID).toBe(row.transfer_syntax_uid);
    expect(meta.MediaStorageSOPInstanceUID).toBe(row.sop_instance_uid);
    expect(dcmjs.data.DicomMetaDictionary.naturalizeDataset(parsed.dict).SOPInstanceUID).toBe(row.sop_instance_uid);
  });
});

/** GETs `url` and goes away once the first bytes of the answer arrive, as a client that gives up does. */
function abortAfterFirstBytes(url: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const req = http.get(url, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', (e) => ((e as NodeJS.ErrnoException).code === 'ECONNRESET' ? resolve() : reject(e)));
  });
}
