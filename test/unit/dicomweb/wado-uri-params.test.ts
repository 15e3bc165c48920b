import { resolveUriViewport } from '../../../src/dicom/pixel-render-params';
import { parseWadoUriQuery } from '../../../src/dicomweb/wado-uri-params';
import { HttpError } from '../../../src/http/errors';

const base = { requestType: 'WADO', studyUID: '1.2.3', seriesUID: '1.2.4', objectUID: '1.2.5' };

describe('parseWadoUriQuery (PS3.18 9.1-9.5)', () => {
  test('reads the object, the content types best first, and the rendering parameters', () => {
    const q = parseWadoUriQuery({ ...base, contentType: 'image/png;q=0.5, image/jpeg', frameNumber: '3', windowCenter: '40', windowWidth: '400', imageQuality: '80', rows: '64', region: '0,0,0.5,1' });
    expect(q.target).toEqual({ studyInstanceUID: '1.2.3', seriesInstanceUID: '1.2.4', sopInstanceUID: '1.2.5' });
    expect(q.contentTypes.map((r) => r.type)).toEqual(['image/jpeg', 'image/png']);
    expect(q.frameNumber).toBe(3);
    expect(q.render).toEqual({ window: { center: 40, width: 400, function: 'linear' }, quality: 80, uriViewport: { rows: 64, region: { xmin: 0, ymin: 0, xmax: 0.5, ymax: 1 } } });
    expect(q.anonymize).toBe(false);
  });

  test('transferSyntax=* (what OHIF\'s wadouri loader sends) asks for the instance as stored', () => {
    expect(parseWadoUriQuery({ ...base, contentType: 'application/dicom', transferSyntax: '*' }).transferSyntax).toBeUndefined();
    expect(parseWadoUriQuery({ ...base, contentType: 'application/dicom', transferSyntax: '1.2.840.10008.1.2.1' }).transferSyntax).toBe('1.2.840.10008.1.2.1');
  });

  test('names the parameters it does not honour', () => {
    expect(parseWadoUriQuery({ ...base, annotation: 'patient', presentationUID: '1.2.9', charset: 'UTF-8', unknown: 'x' }).ignored).toEqual(['annotation', 'presentationUID']);
  });

  test.each([
    [{ ...base, requestType: undefined }, /requestType=WADO is required/],
    [{ ...base, seriesUID: '' }, /seriesUID is required/],
    [{ ...base, objectUID: '1.2.05' }, /invalid objectUID/],
    [{ ...base, contentType: ';;' }, /invalid contentType/],
    [{ ...base, transferSyntax: 'jpeg' }, /invalid transferSyntax/],
    [{ ...base, windowWidth: '400' }, /given together/],
    [{ ...base, windowCenter: '40', windowWidth: '0.5' }, /at least 1/],
    [{ ...base, rows: '9000' }, /at most 8192/],
    [{ ...base, region: '0.5,0,0.5,1' }, /min < max/],
  ])('400 for %o', (query, message) => {
    let thrown: unknown;
    try {
      parseWadoUriQuery(query as Record<string, unknown>);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(HttpError);
    expect((thrown as HttpError).status).toBe(400);
    expect((thrown as HttpError).message).toMatch(message);
  });
});

describe('resolveUriViewport (PS3.18 9.5.1.2.4-5)', () => {
  test('whole image at its own size: no viewport', () => {
    expect(resolveUriViewport({}, 512, 256)).toBeUndefined();
  });

  test('rows alone, columns alone and both as maxima keep the aspect ratio', () => {
    expect(resolveUriViewport({ rows: 128 }, 512, 256)).toEqual({ width: 256, height: 128 });
    expect(resolveUriViewport({ columns: 128 }, 512, 256)).toEqual({ width: 128, height: 64 });
    expect(resolveUriViewport({ rows: 100, columns: 100 }, 512, 256)).toEqual({ width: 100, height: 50 });
  });

  test('a region in fractions becomes a pixel region, shown at one pixel per pixel unless sized', () => {
    expect(resolveUriViewport({ region: { xmin: 0.25, ymin: 0, xmax: 0.75, ymax: 0.5 } }, 512, 256)).toEqual({ width: 256, height: 128, region: { x: 128, y: 0, width: 256, height: 128 } });
    expect(resolveUriViewport({ region: { xmin: 0, ymin: 0, xmax: 0.5, ymax: 0.5 }, columns: 512 }, 512, 256)).toEqual({ width: 512, height: 256, region: { x: 0, y: 0, width: 256, height: 128 } });
  });

  test('sides are capped at 8192, keeping the aspect ratio', () => {
    expect(resolveUriViewport({ columns: 8192 }, 100, 200)).toEqual({ width: 4096, height: 8192 });
  });
});
