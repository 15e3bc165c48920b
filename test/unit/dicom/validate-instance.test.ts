/**
 * Which scanned instances may be stored (PS3.18 10.5.3) and the UID syntax rules (PS3.5 9.1)
 * that keep UIDs safe as URL segments and storage keys.
 */
import { DicomInstanceError, ScannedInstance, StatusCode } from '../../../src/dicom/types';
import { isValidUid, validateInstance } from '../../../src/dicom/validate-instance';
import { element, identity, part10, scanBytes } from './dicom-fixtures';

describe('isValidUid', () => {
  it.each(['1.2.840.10008.1.2', '0.0.0.0.1', '2.25.329800735698586629295641978511506172918', '1'])('accepts %s', (uid) => {
    expect(isValidUid(uid)).toBe(true);
  });

  it.each([
    ['empty', ''],
    ['a path segment', '1.2/../3'],
    ['dots only', '../..'],
    ['an empty component', '1..2'],
    ['a trailing dot', '1.2.'],
    ['a leading zero', '1.02.3'],
    ['letters', '1.2.abc'],
    ['a space', '1.2.3 '],
    ['65 characters', `1.${'2'.repeat(63)}`],
  ])('refuses %s', (_why, uid) => {
    expect(isValidUid(uid)).toBe(false);
  });

  it('accepts exactly 64 characters', () => {
    expect(isValidUid(`1.${'2'.repeat(62)}`)).toBe(true);
  });
});

describe('validateInstance', () => {
  let valid: ScannedInstance;
  beforeAll(async () => {
    valid = await scanBytes(part10('1.2.840.10008.1.2.1', identity()));
  });
  const withAttributes = (changes: Partial<ScannedInstance['attributes']>, fileMeta = valid.fileMeta): ScannedInstance => ({
    ...valid,
    attributes: { ...valid.attributes, ...changes },
    fileMeta,
  });
  const reasonOf = (scanned: ScannedInstance): number | 'stored' => {
    try {
      validateInstance(scanned);
      return 'stored';
    } catch (err) {
      expect(err).toBeInstanceOf(DicomInstanceError);
      return (err as DicomInstanceError).failureReason;
    }
  };

  it('stores a complete instance', () => {
    expect(reasonOf(valid)).toBe('stored');
  });

  it.each(['sopClassUID', 'sopInstanceUID', 'studyInstanceUID', 'seriesInstanceUID'] as const)('refuses a missing %s with 0xA900', (key) => {
    expect(reasonOf(withAttributes({ [key]: '' }))).toBe(StatusCode.DataSetDoesNotMatchSopClass);
  });

  it.each(['sopInstanceUID', 'studyInstanceUID', 'seriesInstanceUID', 'transferSyntaxUID'] as const)('refuses a path-like %s with 0xC000', (key) => {
    expect(reasonOf(withAttributes({ [key]: '1.2/../../etc' }))).toBe(StatusCode.CannotUnderstand);
  });

  it('refuses an over-long SOP Instance UID with 0xC000', () => {
    expect(reasonOf(withAttributes({ sopInstanceUID: `1.${'3'.repeat(70)}` }))).toBe(StatusCode.CannotUnderstand);
  });

  it('refuses a DICOMDIR, named by data set or only by File Meta, with 0x0122', () => {
    expect(reasonOf(withAttributes({ sopClassUID: '1.2.840.10008.1.3.10' }))).toBe(StatusCode.NoSuchSopClass);
    const meta = { mediaStorageSOPClassUID: '1.2.840.10008.1.3.10', mediaStorageSOPInstanceUID: '1.2.3', transferSyntaxUID: '1.2.840.10008.1.2.1' };
    expect(reasonOf(withAttributes({ sopClassUID: '', studyInstanceUID: '', seriesInstanceUID: '' }, meta))).toBe(StatusCode.NoSuchSopClass);
  });

  it('stores an instance whose File Meta names another SOP Instance: the data set wins', () => {
    const meta = { mediaStorageSOPClassUID: valid.attributes.sopClassUID, mediaStorageSOPInstanceUID: '1.2.999', transferSyntaxUID: '1.2.840.10008.1.2.1' };
    expect(reasonOf(withAttributes({}, meta))).toBe('stored');
  });

  it('stores a well-formed private SOP Class UID', () => {
    expect(reasonOf(withAttributes({ sopClassUID: '1.2.276.0.19.55.1.5.1.1.1' }))).toBe('stored');
  });

  it('reads UIDs padded with a trailing NUL or space as trimmed', async () => {
    const dataSet = Buffer.concat([
      element(0x00080016, 'UI', Buffer.from('1.2.840.10008.5.1.4.1.1.2\0', 'latin1')),
      element(0x00080018, 'UI', Buffer.from('1.2.345 ', 'latin1')),
      element(0x0020000d, 'UI', Buffer.from('1.2.3\0', 'latin1')),
      element(0x0020000e, 'UI', Buffer.from('1.2.4 ', 'latin1')),
    ]);
    const scanned = await scanBytes(part10('1.2.840.10008.1.2.1', dataSet));
    expect(scanned.attributes).toMatchObject({ sopInstanceUID: '1.2.345', studyInstanceUID: '1.2.3', seriesInstanceUID: '1.2.4' });
    expect(reasonOf(scanned)).toBe('stored');
  });
});
