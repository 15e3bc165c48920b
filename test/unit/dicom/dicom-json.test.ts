/**
 * DICOM JSON (PS3.18 F.2) as produced from generated data sets: value types per VR, padding,
 * Person Names, binary values inline or as BulkDataURIs, and what is left out.
 */
import type { DicomJson } from '../../../src/dicom/types';
import {
  EXPLICIT_BE,
  EXPLICIT_LE,
  IMPLICIT_LE,
  UNDEFINED,
  element,
  identity,
  item,
  part10,
  readShared,
  scanBytes,
  sequence,
  text,
  uid,
  us,
} from './dicom-fixtures';

async function json(dataSet: Buffer, transferSyntax = '1.2.840.10008.1.2.1'): Promise<DicomJson> {
  return (await scanBytes(part10(transferSyntax, Buffer.concat([identity(transferSyntax === '1.2.840.10008.1.2' ? IMPLICIT_LE : transferSyntax === '1.2.840.10008.1.2.2' ? EXPLICIT_BE : EXPLICIT_LE), dataSet])))).dataset;
}

function binary(vr: string, bytes: number[] | Buffer, enc = EXPLICIT_LE, tag = 0x00091010): Buffer {
  return element(tag, vr, Buffer.from(bytes), enc);
}

describe('values by VR', () => {
  it('turns IS and DS into numbers, and unreadable numbers into null', async () => {
    const j = await json(Buffer.concat([
      element(0x00200011, 'IS', text(' 12 ')),
      element(0x00280008, 'IS', text('1A')),
      element(0x00281050, 'DS', text('1.5E3\\-0.5\\')),
    ]));
    expect(j['00200011']).toEqual({ vr: 'IS', Value: [12] });
    expect(j['00280008']).toEqual({ vr: 'IS', Value: [null] });
    expect(j['00281050']).toEqual({ vr: 'DS', Value: [1500, -0.5, null] });
  });

  it('reads binary numbers in the data set byte order', async () => {
    const sv = Buffer.alloc(16);
    sv.writeBigInt64LE(-5n, 0);
    sv.writeBigInt64LE(2n ** 60n, 8);
    const fd = Buffer.alloc(8);
    fd.writeDoubleLE(0.25);
    const j = await json(Buffer.concat([
      element(0x00280010, 'US', us(512, 7)),
      element(0x00281052, 'SS', Buffer.from([0x00, 0xfc])),
      element(0x0018605a, 'FD', fd),
      element(0x00720082, 'SV', sv),
      element(0x00280009, 'AT', Buffer.from([0x18, 0x00, 0x63, 0x10])),
    ]));
    expect(j['00280010'].Value).toEqual([512, 7]);
    expect(j['00281052'].Value).toEqual([-1024]);
    expect(j['0018605A'].Value).toEqual([0.25]);
    expect(j['00720082'].Value).toEqual([-5, '1152921504606846976']); // beyond 2^53: decimal string
    expect(j['00280009'].Value).toEqual(['00181063']);
  });

  it('reads the same numbers from a Big Endian data set', async () => {
    const j = await json(element(0x00280010, 'US', Buffer.from([0x02, 0x00]), EXPLICIT_BE), '1.2.840.10008.1.2.2');
    expect(j['00280010'].Value).toEqual([512]);
  });

  it('trims padding per VR: UI NULs, LO leading spaces, but LT keeps leading spaces and its backslashes', async () => {
    const j = await json(Buffer.concat([
      element(0x00080014, 'UI', Buffer.from('1.2.3\0', 'latin1')),
      element(0x00081030, 'LO', text('  Brain  ')),
      element(0x00204000, 'LT', text('  a\\b  ')),
      element(0x00080008, 'CS', text('ORIGINAL\\\\AXIAL')),
    ]));
    expect(j['00080014'].Value).toEqual(['1.2.3']);
    expect(j['00081030'].Value).toEqual(['Brain']);
    expect(j['00204000'].Value).toEqual(['  a\\b']);
    expect(j['00080008'].Value).toEqual(['ORIGINAL', null, 'AXIAL']);
  });

  it('leaves Value out of empty elements and empty sequences (PS3.18 F.2.5)', async () => {
    const j = await json(Buffer.concat([element(0x00100030, 'DA', Buffer.alloc(0)), element(0x00100010, 'PN', text('    ')), sequence(0x00081115, [])]));
    expect(j['00100030']).toEqual({ vr: 'DA' });
    expect(j['00100010']).toEqual({ vr: 'PN' });
    expect(j['00081115']).toEqual({ vr: 'SQ' });
  });

  it('splits Person Name component groups and drops empty ones', async () => {
    const j = await json(Buffer.concat([element(0x00080005, 'CS', text('ISO_IR 192')), element(0x00100010, 'PN', Buffer.from('Yamada^Tarou=山田^太郎==', 'utf8'))]));
    expect(j['00100010'].Value).toEqual([{ Alphabetic: 'Yamada^Tarou', Ideographic: '山田^太郎' }]);
  });

  it('reads an explicit UN on a public tag as its dictionary VR', async () => {
    const j = await json(element(0x00100010, 'UN', text('Doe^Jane')));
    expect(j['00100010']).toEqual({ vr: 'PN', Value: [{ Alphabetic: 'Doe^Jane' }] });
  });

  it('resolves US-or-SS by Pixel Representation in Implicit VR', async () => {
    const j = await json(Buffer.concat([element(0x00280103, 'US', us(1), IMPLICIT_LE), element(0x00280106, 'xs', Buffer.from([0xff, 0xff]), IMPLICIT_LE)]), '1.2.840.10008.1.2');
    expect(j['00280106']).toEqual({ vr: 'SS', Value: [-1] });
  });
});

describe('binary values', () => {
  it('inlines up to 256 bytes as base64 and refers to longer values by tag path', async () => {
    const j = await json(Buffer.concat([binary('OB', [1, 2, 3, 4]), binary('OB', Buffer.alloc(257), EXPLICIT_LE, 0x00091011)]));
    expect(j['00091010']).toEqual({ vr: 'OB', InlineBinary: 'AQIDBA==' });
    expect(j['00091011']).toEqual({ vr: 'OB', BulkDataURI: 'bulkdata/00091011' });
  });

  it('builds nested BulkDataURIs from sequence tag and item index', async () => {
    const big = element(0x00420011, 'OB', Buffer.alloc(300));
    const j = await json(sequence(0x00081115, [item(Buffer.alloc(0)), item(big)], true));
    expect((j['00081115'].Value![1] as DicomJson)['00420011']).toEqual({ vr: 'OB', BulkDataURI: 'bulkdata/00081115/1/00420011' });
  });

  it('refers to an icon inside IconImageSequence as bulkdata/00880200/0/7FE00010', async () => {
    const scanned = await scanBytes(readShared('modalities/fodicom__JPEGwithIcon.dcm'));
    const icon = scanned.dataset['00880200'].Value![0] as DicomJson;
    expect(icon['7FE00010']).toEqual({ vr: 'OB', BulkDataURI: 'bulkdata/00880200/0/7FE00010' });
    expect(scanned.dataset['7FE00010']).toEqual({ vr: 'OB', BulkDataURI: 'bulkdata/7FE00010' });
  });

  it('writes InlineBinary in Little Endian for a Big Endian OW', async () => {
    const j = await json(element(0x00091010, 'OW', Buffer.from([0x01, 0x02, 0x03, 0x04]), EXPLICIT_BE), '1.2.840.10008.1.2.2');
    expect(Buffer.from(j['00091010'].InlineBinary!, 'base64')).toEqual(Buffer.from([0x02, 0x01, 0x04, 0x03]));
  });
});

describe('sequences', () => {
  it('reads a UN of undefined length as a sequence in Implicit VR Little Endian (CP-246)', async () => {
    const inner = item(element(0x00081150, 'UI', uid('1.2.840.10008.5.1.4.1.1.2'), IMPLICIT_LE), true);
    const un = Buffer.concat([element(0x00091010, 'UN', Buffer.alloc(0), EXPLICIT_LE, UNDEFINED), inner, Buffer.from('feffdde000000000', 'hex')]);
    const j = await json(un);
    expect(j['00091010']).toEqual({ vr: 'SQ', Value: [{ '00081150': { vr: 'UI', Value: ['1.2.840.10008.5.1.4.1.1.2'] } }] });
  });

  it('finds a private sequence of defined length in Implicit VR by its Item tag (priv_SQ)', async () => {
    const scanned = await scanBytes(readShared('malformed/pydicom__priv_SQ.dcm'));
    const sq = scanned.dataset['3F031001'];
    expect(sq.vr).toBe('SQ');
    expect(sq.Value).toHaveLength(1);
    expect((sq.Value![0] as DicomJson)['00080090']).toBeDefined();
  });
});

describe('what is left out', () => {
  it('drops group lengths, File Meta and Data Set Trailing Padding; a repeated tag keeps its first value', async () => {
    const j = await json(Buffer.concat([
      element(0x00080000, 'UL', Buffer.from([4, 0, 0, 0])),
      element(0x00100020, 'LO', text('FIRST')),
      element(0x00100020, 'LO', text('SECOND')),
      element(0xfffcfffc, 'OB', Buffer.alloc(8)),
    ]));
    expect(Object.keys(j)).toEqual(['00080016', '00080018', '0020000D', '0020000E', '00100020']);
    expect(j['00100020'].Value).toEqual(['FIRST']);
  });
});
