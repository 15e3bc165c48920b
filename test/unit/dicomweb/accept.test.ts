import { negotiateBulkValue, negotiateInstances, negotiateMetadata, negotiatePixels, parseAccept } from '../../../src/dicomweb/accept';

const EXPLICIT = '1.2.840.10008.1.2.1';
const IMPLICIT = '1.2.840.10008.1.2';
const BIG = '1.2.840.10008.1.2.2';
const JPEG_BASELINE = '1.2.840.10008.1.2.4.50';
const JLS = '1.2.840.10008.1.2.4.80';
const HTJ2K = '1.2.840.10008.1.2.4.201';

describe('parseAccept (RFC 9110 12.5.1, PS3.18 8.7)', () => {
  test('an absent header means */*', () => {
    expect(parseAccept(undefined).map((r) => r.type)).toEqual(['*/*']);
  });

  test('reads quoted and unquoted type and transfer-syntax parameters alike', () => {
    const [quoted] = parseAccept('multipart/related; type="application/dicom"; transfer-syntax="1.2.840.10008.1.2.1"');
    const [bare] = parseAccept('multipart/related;type=application/dicom;transfer-syntax=1.2.840.10008.1.2.1');
    expect(quoted.params).toEqual({ type: 'application/dicom', 'transfer-syntax': EXPLICIT });
    expect(bare.params).toEqual(quoted.params);
  });

  test('orders alternatives by q value, keeping header order for ties', () => {
    const ranges = parseAccept('image/jpeg;q=0.5, application/octet-stream, image/jls;q=0.9, image/jp2');
    expect(ranges.map((r) => r.type)).toEqual(['application/octet-stream', 'image/jp2', 'image/jls', 'image/jpeg']);
  });

  test('drops alternatives with q=0', () => {
    expect(parseAccept('application/dicom;q=0, */*;q=0.1').map((r) => r.type)).toEqual(['*/*']);
  });

  test('does not split on commas inside quoted parameters', () => {
    const ranges = parseAccept('multipart/related; type="application/dicom"; x="a,b", application/json');
    expect(ranges.map((r) => r.type)).toEqual(['multipart/related', 'application/json']);
    expect(ranges[0].params.x).toBe('a,b');
  });

  test('resolves the media type aliases clients send (image/x-jls, image/jhc)', () => {
    const ranges = parseAccept('multipart/related; type="image/x-jls", image/jhc');
    expect(ranges[0].params.type).toBe('image/jls');
    expect(ranges[1].type).toBe('image/jphc');
  });

  test('the accept query parameter takes precedence over the header (PS3.18 8.3.3.1)', () => {
    expect(parseAccept('application/dicom', 'application/json').map((r) => r.type)).toEqual(['application/json']);
  });

  test('ignores garbage alternatives and keeps the good ones', () => {
    expect(parseAccept('not a type, application/dicom+json').map((r) => r.type)).toEqual(['application/dicom+json']);
  });
});

describe('negotiateInstances (PS3.18 8.7.3.2)', () => {
  const none = { singlePart: false };

  test('*/* is multipart application/dicom as stored', () => {
    expect(negotiateInstances(parseAccept('*/*'), [JPEG_BASELINE], none)).toEqual({ multipart: true, partType: 'application/dicom', transferSyntax: '*' });
  });

  test('multipart application/dicom without transfer-syntax is as stored', () => {
    expect(negotiateInstances(parseAccept('multipart/related; type=application/dicom'), [JPEG_BASELINE, EXPLICIT], none)?.transferSyntax).toBe('*');
  });

  test('a specific transfer syntax that matches every stored instance is served without transcoding', () => {
    const plan = negotiateInstances(parseAccept(`multipart/related; type="application/dicom"; transfer-syntax=${EXPLICIT}`), [EXPLICIT], none);
    expect(plan?.transferSyntax).toBe(EXPLICIT);
  });

  test('a specific transfer syntax that differs needs a transcoder, else nothing is acceptable', () => {
    const accept = parseAccept(`multipart/related; type="application/dicom"; transfer-syntax=${EXPLICIT}`);
    expect(negotiateInstances(accept, [JPEG_BASELINE], none)).toBeNull();
    expect(negotiateInstances(accept, [JPEG_BASELINE], { singlePart: false, canTranscode: () => true })?.transferSyntax).toBe(EXPLICIT);
  });

  test('falls back to a lower-q alternative that needs no transcoding', () => {
    const accept = parseAccept(`multipart/related; type="application/dicom"; transfer-syntax=${EXPLICIT}, multipart/related; type="application/dicom"; transfer-syntax=*; q=0.5`);
    expect(negotiateInstances(accept, [JPEG_BASELINE], none)?.transferSyntax).toBe('*');
  });

  test('single part application/dicom only where one instance is the target', () => {
    expect(negotiateInstances(parseAccept('application/dicom'), [EXPLICIT], none)).toBeNull();
    expect(negotiateInstances(parseAccept('application/dicom'), [EXPLICIT], { singlePart: true })).toEqual({ multipart: false, partType: 'application/dicom', transferSyntax: '*' });
  });

  test('octet-stream is not acceptable for instances', () => {
    expect(negotiateInstances(parseAccept('multipart/related; type="application/octet-stream"'), [EXPLICIT], none)).toBeNull();
  });
});

describe('negotiatePixels (PS3.18 8.7.3.3, 8.7.3.5.2)', () => {
  const multi = { singlePart: false };

  test('OHIF\'s default (octet-stream, transfer-syntax=*) gets JPEG frames as stored, as image/jpeg', () => {
    const rep = negotiatePixels(parseAccept('multipart/related; type=application/octet-stream; transfer-syntax=*'), JPEG_BASELINE, multi);
    expect(rep).toEqual({ multipart: true, partType: 'image/jpeg', transferSyntax: JPEG_BASELINE, conversion: 'stored' });
  });

  test('octet-stream without transfer-syntax means uncompressed: native data is served', () => {
    const rep = negotiatePixels(parseAccept('multipart/related; type="application/octet-stream"'), IMPLICIT, multi);
    expect(rep).toEqual({ multipart: true, partType: 'application/octet-stream', transferSyntax: EXPLICIT, conversion: 'stored' });
  });

  test('octet-stream without transfer-syntax on JPEG data needs a transcoder', () => {
    const accept = parseAccept('multipart/related; type="application/octet-stream"');
    expect(negotiatePixels(accept, JPEG_BASELINE, multi)).toBeNull();
    expect(negotiatePixels(accept, JPEG_BASELINE, { singlePart: false, canTranscode: () => true })?.conversion).toBe('transcode');
  });

  test('image/jpeg without transfer-syntax takes whichever JPEG syntax is stored', () => {
    expect(negotiatePixels(parseAccept('multipart/related; type="image/jpeg"'), JPEG_BASELINE, multi)?.transferSyntax).toBe(JPEG_BASELINE);
  });

  test('several alternatives: the one matching the stored data wins over a higher-q one that needs conversion', () => {
    const accept = parseAccept('multipart/related; type="application/octet-stream", multipart/related; type="image/jls"; q=0.8');
    expect(negotiatePixels(accept, JLS, multi)?.partType).toBe('image/jls');
  });

  test('HTJ2K frames are image/jphc', () => {
    expect(negotiatePixels(parseAccept('*/*'), HTJ2K, multi)?.partType).toBe('image/jphc');
  });

  test('a bare media type is single part, allowed for one frame only', () => {
    expect(negotiatePixels(parseAccept('image/jpeg'), JPEG_BASELINE, multi)).toBeNull();
    expect(negotiatePixels(parseAccept('image/jpeg'), JPEG_BASELINE, { singlePart: true })?.multipart).toBe(false);
  });

  test('Big Endian native data is byte-swapped for octet-stream without transfer-syntax', () => {
    expect(negotiatePixels(parseAccept('multipart/related; type=application/octet-stream'), BIG, multi)?.conversion).toBe('byteswap');
    expect(negotiatePixels(parseAccept('*/*'), BIG, multi)).toMatchObject({ transferSyntax: BIG, conversion: 'stored' });
  });

  test('a media type that does not fit the requested transfer syntax is refused', () => {
    expect(negotiatePixels(parseAccept(`multipart/related; type="image/jpeg"; transfer-syntax=${JLS}`), JLS, multi)).toBeNull();
  });
});

describe('negotiateBulkValue and negotiateMetadata', () => {
  test('bulk data defaults to multipart octet-stream', () => {
    expect(negotiateBulkValue(parseAccept(undefined))).toEqual({ multipart: true, partType: 'application/octet-stream' });
  });

  test('an encapsulated PDF can be asked for as application/pdf, single part', () => {
    expect(negotiateBulkValue(parseAccept('application/pdf'), 'application/pdf')).toEqual({ multipart: false, partType: 'application/pdf' });
  });

  test('metadata is DICOM JSON, or plain JSON when only that is acceptable', () => {
    expect(negotiateMetadata(parseAccept('application/dicom+json'))).toBe('application/dicom+json');
    expect(negotiateMetadata(parseAccept('application/json'))).toBe('application/json');
    expect(negotiateMetadata(parseAccept('multipart/related; type="application/dicom+xml"'))).toBeNull();
  });
});
