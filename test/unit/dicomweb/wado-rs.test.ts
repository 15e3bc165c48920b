import { buildFileMeta, IMPLEMENTATION_CLASS_UID, parseBulkPath, parseFrameList, parseRange } from '../../../src/dicomweb/wado-rs';
import { HttpError } from '../../../src/http/errors';
// dcmjs ships no type declarations.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const dcmjs = require('dcmjs');

describe('parseFrameList (PS3.18 10.4.1.1.4)', () => {
  test('reads 1-based frame numbers in request order', () => {
    expect(parseFrameList('1,3,5')).toEqual([1, 3, 5]);
  });

  test('tolerates spaces around numbers', () => {
    expect(parseFrameList('2, 4')).toEqual([2, 4]);
  });

  test.each(['0', '1,,2', 'a', '-1', '1.5', ''])('refuses %p with a 400 that explains the syntax', (text) => {
    expect(() => parseFrameList(text)).toThrow(HttpError);
    try {
      parseFrameList(text);
    } catch (err) {
      expect((err as HttpError).status).toBe(400);
      expect((err as HttpError).message).toMatch(/frame numbers are integers from 1/);
    }
  });
});

describe('parseRange (RFC 9110 14.1.2)', () => {
  test('a closed range', () => {
    expect(parseRange('bytes=10-19', 100)).toEqual({ start: 10, end: 19 });
  });

  test('an open-ended range runs to the end', () => {
    expect(parseRange('bytes=90-', 100)).toEqual({ start: 90, end: 99 });
  });

  test('a suffix range is the last n bytes', () => {
    expect(parseRange('bytes=-5', 100)).toEqual({ start: 95, end: 99 });
  });

  test('an end past the value is clamped', () => {
    expect(parseRange('bytes=50-500', 100)).toEqual({ start: 50, end: 99 });
  });

  test('a start at or past the end is unsatisfiable', () => {
    expect(parseRange('bytes=100-', 100)).toBe('unsatisfiable');
  });

  test('several ranges, other units and malformed ranges are ignored (a 200 answer)', () => {
    expect(parseRange('bytes=0-1,5-6', 100)).toBeNull();
    expect(parseRange('items=0-1', 100)).toBeNull();
    expect(parseRange('bytes=9-3', 100)).toBeNull();
  });
});

describe('parseBulkPath', () => {
  test('accepts a top-level tag and a nested path, upper-casing hex', () => {
    expect(parseBulkPath(['7fe00010'])).toEqual(['7FE00010']);
    expect(parseBulkPath(['00540016', '0', '00181031'])).toEqual(['00540016', '0', '00181031']);
  });

  test('refuses a path that does not alternate tags and item numbers', () => {
    expect(() => parseBulkPath(['00540016', '0'])).toThrow(/invalid bulk data path/);
    expect(() => parseBulkPath(['..', 'etc'])).toThrow(/invalid bulk data path/);
  });
});

describe('buildFileMeta (PS3.10 7.1)', () => {
  const ids = {
    sopClassUID: '1.2.840.10008.5.1.4.1.1.7',
    sopInstanceUID: '2.25.123456789',
    transferSyntaxUID: '1.2.840.10008.1.2',
  };

  test('starts with a zero preamble and DICM', () => {
    const meta = buildFileMeta(ids);
    expect(meta.subarray(0, 128).every((b) => b === 0)).toBe(true);
    expect(meta.toString('latin1', 128, 132)).toBe('DICM');
  });

  test('group length covers exactly the rest of the group', () => {
    const meta = buildFileMeta(ids);
    expect(meta.readUInt16LE(132)).toBe(0x0002);
    expect(meta.readUInt32LE(140)).toBe(meta.length - 144);
  });

  test('dcmjs reads the values back, with our implementation class UID', () => {
    // An empty Implicit VR Little Endian data set with one element after the meta group.
    const element = Buffer.from([0x08, 0x00, 0x60, 0x00, 0x02, 0x00, 0x00, 0x00, 0x4f, 0x54]);
    const file = Buffer.concat([buildFileMeta(ids), element]);
    const dict = dcmjs.data.DicomMessage.readFile(file.buffer.slice(file.byteOffset, file.byteOffset + file.length));
    const meta = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.meta);
    expect(meta.MediaStorageSOPClassUID).toBe(ids.sopClassUID);
    expect(meta.MediaStorageSOPInstanceUID).toBe(ids.sopInstanceUID);
    expect(meta.TransferSyntaxUID).toBe(ids.transferSyntaxUID);
    expect(meta.ImplementationClassUID).toBe(IMPLEMENTATION_CLASS_UID);
    expect(dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.dict).Modality).toBe('OT');
  });

  test('UIDs of odd length are padded with NUL to an even length (PS3.5 9.1)', () => {
    const meta = buildFileMeta({ ...ids, sopInstanceUID: '2.25.12' });
    const at = meta.indexOf(Buffer.from('2.25.12\0', 'latin1'));
    expect(at).toBeGreaterThan(0);
    expect(meta.readUInt16LE(at - 2)).toBe(8);
  });
});
