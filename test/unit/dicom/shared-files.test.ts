/**
 * Every DICOM file of the shared test data goes through the scanner and validation; the
 * outcome of each clean file and each malformed one is pinned here, derived from MANIFEST.md.
 */
import { DicomInstanceError, StatusCode } from '../../../src/dicom/types';
import { validateInstance } from '../../../src/dicom/validate-instance';
import { listSharedFiles, readShared, scanBytes } from './dicom-fixtures';

/** Validation outcome: 'stored' or the failure reason validateInstance throws. */
async function validationOutcome(relative: string): Promise<number | 'stored'> {
  const scanned = await scanBytes(readShared(relative));
  try {
    validateInstance(scanned);
    return 'stored';
  } catch (err) {
    expect(err).toBeInstanceOf(DicomInstanceError);
    return (err as DicomInstanceError).failureReason;
  }
}

const NOT_DICOM = /(\.txt|README)$/;
const clean = listSharedFiles().filter((f) => !f.startsWith('malformed/') && !NOT_DICOM.test(f));

/** Clean files that are nonetheless refused, and why. */
const CLEAN_EXCEPTIONS: Record<string, number | 'scan C000'> = {
  // Media Storage Directory: not a storable instance (decision in validate-instance.ts).
  'series/pydicom-dicomdirtests/DICOMDIR': StatusCode.NoSuchSopClass,
  'series/pydicom-dicomdirtests/DICOMDIR-bigEnd': StatusCode.NoSuchSopClass,
  'series/pydicom-dicomdirtests/DICOMDIR-empty.dcm': StatusCode.NoSuchSopClass,
  'series/pydicom-dicomdirtests/DICOMDIR-implicit': StatusCode.NoSuchSopClass,
  'series/pydicom-dicomdirtests/DICOMDIR-nopatient': StatusCode.NoSuchSopClass,
  'series/pydicom-dicomdirtests/DICOMDIR-reordered': StatusCode.NoSuchSopClass,
  'series/pydicom-dicomdirtests/TINY_ALPHA/DICOMDIR': StatusCode.NoSuchSopClass,
  // Its Directory Record Sequence declares 10696 bytes but its items add up to 10720.
  'series/pydicom-dicomdirtests/DICOMDIR-nooffset': 'scan C000',
  // pydicom-data's HTJ2K sample carries no StudyInstanceUID/SeriesInstanceUID.
  'transfer-syntax/pydicom-data__HTJ2KLossless_08_RGB.dcm': StatusCode.DataSetDoesNotMatchSopClass,
  // Constructed charset samples: a code sequence only, no SOP Class UID.
  'charset/pydicom-charset__chrSQEncoding.dcm': StatusCode.DataSetDoesNotMatchSopClass,
  'charset/pydicom-charset__chrSQEncoding1.dcm': StatusCode.DataSetDoesNotMatchSopClass,
};

describe('clean shared DICOM files', () => {
  it('finds the shared data set', () => {
    expect(clean.length).toBeGreaterThan(200);
  });

  it.each(clean.filter((f) => !(f in CLEAN_EXCEPTIONS)))('stores %s', async (relative) => {
    const bytes = readShared(relative);
    const scanned = await scanBytes(bytes);
    expect(() => validateInstance(scanned)).not.toThrow();
    expect(scanned.size).toBe(bytes.length);
    expect(scanned.attributes.sopInstanceUID).toBe(scanned.dataset['00080018'].Value![0]);
    expect(Object.keys(scanned.dataset).every((k) => /^[0-9A-F]{8}$/.test(k) && !k.startsWith('0002'))).toBe(true);
    // Pixel Data, or Float / Double Float Pixel Data (parametric maps).
    const hasPixels = ['7FE00010', '7FE00008', '7FE00009'].some((k) => k in scanned.dataset);
    expect(scanned.pixelDataOffset === null).toBe(!hasPixels || scanned.attributes.transferSyntaxUID === '1.2.840.10008.1.2.1.99');
    if (hasPixels) expect(scanned.frames.length).toBe(scanned.attributes.numberOfFrames ?? 1);
    else expect(scanned.frames).toEqual([]);
  });

  it.each(Object.entries(CLEAN_EXCEPTIONS))('refuses %s with %s', async (relative, expected) => {
    if (expected === 'scan C000') {
      await expect(scanBytes(readShared(relative))).rejects.toMatchObject({ failureReason: StatusCode.CannotUnderstand });
    } else {
      expect(await validationOutcome(relative)).toBe(expected);
    }
  });

  it('reads the DICOMDIR in every encoding before refusing it', async () => {
    for (const name of ['DICOMDIR', 'DICOMDIR-bigEnd', 'DICOMDIR-implicit']) {
      const scanned = await scanBytes(readShared(`series/pydicom-dicomdirtests/${name}`));
      expect(scanned.fileMeta?.mediaStorageSOPClassUID).toBe('1.2.840.10008.1.3.10');
      expect(scanned.dataset['00041220'].Value).toHaveLength(52); // Directory Record Sequence items
    }
  });
});

/**
 * Each malformed file: the scanner's outcome ('scan' = accepted by the scanner) and then the
 * validation outcome, with the reason from the MANIFEST notes.
 */
const MALFORMED: Record<string, { scan: 'ok' | number; store?: 'stored' | number }> = {
  // Meta without (0002,0000) group length is read element by element. Its meta SOP Instance UID
  // (1.2.3) differs from the data set's (1.1): accepted, the data set wins.
  'dcmjs__no-meta-length-test.dcm': { scan: 'ok', store: 'stored' },
  // No preamble/meta: sniffed as Implicit VR Little Endian.
  'fodicom__CR-MONO1-10-chest.dcm': { scan: 'ok', store: 'stored' },
  // Big Endian with a UN sequence of undefined length: CP-246, read as Implicit VR LE.
  'fodicom__GH177_D_CLUNIE_CT1_IVRLE_BigEndian_undefined_length.dcm': { scan: 'ok', store: 'stored' },
  // Valid DICOM with script in text: stored verbatim, escaping is the renderer's job.
  'orthanc__2017-06-27-XSSInjection.dcm': { scan: 'ok', store: 'stored' },
  // 65535 x 65535 x 16 bit declared, 256 bytes of Pixel Data: refused without allocating.
  'orthanc__2026-05-26-oob-monochrome-65535.dcm': { scan: StatusCode.CannotUnderstand },
  // Rows empty (and, despite the MANIFEST, no Pixel Data at all): the header is fine.
  'orthanc__DummyCTInvalidRows.dcm': { scan: 'ok', store: 'stored' },
  // LO longer than 64 characters: kept as sent.
  'orthanc__DummyCTWithLongTag.dcm': { scan: 'ok', store: 'stored' },
  // No preamble/meta, many private tags: sniffed as Implicit VR LE.
  'orthanc__PrivateMDNTags.dcm': { scan: 'ok', store: 'stored' },
  // Private but well-formed SOP Class UID: accepted here (SOP class policy is the STOW service's).
  'orthanc__UnknownSopClassUid.dcm': { scan: 'ok', store: 'stored' },
  // No preamble/meta, Explicit VR LE: sniffed.
  'pydicom__ExplVR_LitEndNoMeta.dcm': { scan: 'ok', store: 'stored' },
  // A Sequence Delimiter byte pattern inside a fragment: item lengths are followed, not patterns.
  'pydicom__JPEG2000-embedded-sequence-delimiter.dcm': { scan: 'ok', store: 'stored' },
  // Data Set Trailing Padding after Pixel Data: ignored.
  'pydicom__MR_small_padded.dcm': { scan: 'ok', store: 'stored' },
  // Pixel Data declares 8192 bytes, 8130 present.
  'pydicom__MR_truncated.dcm': { scan: StatusCode.CannotUnderstand },
  // UN sequence parsed (CP-246), but the data set has no SOP Class / Instance UID.
  'pydicom__UN_sequence.dcm': { scan: 'ok', store: StatusCode.DataSetDoesNotMatchSopClass },
  // NumberOfFrames '1A': null in the index, frames counted from the Pixel Data (15). Meta
  // SOP Instance UID (1.2.999...) differs from the data set's (1.9.999...): data set wins.
  'pydicom__badVR.dcm': { scan: 'ok', store: 'stored' },
  // Empty SpecificCharacterSet is fine; the data set has no SOP Class UID.
  'pydicom__empty_charset_LEI.dcm': { scan: 'ok', store: StatusCode.DataSetDoesNotMatchSopClass },
  // Meta lacks TransferSyntaxUID: the data set is sniffed (Implicit VR LE); it has no UIDs at all.
  'pydicom__meta_missing_tsyntax.dcm': { scan: 'ok', store: StatusCode.DataSetDoesNotMatchSopClass },
  // Not what the MANIFEST says: it is CT_small.dcm cut one byte too early (it opens with the
  // meta's last pad byte, then Explicit VR LE), so no element starts at byte 0.
  'pydicom__no_meta.dcm': { scan: StatusCode.CannotUnderstand },
  // Private sequence in Implicit VR found by its Item tag; no SOP Class UID in the data set.
  'pydicom__priv_SQ.dcm': { scan: 'ok', store: StatusCode.DataSetDoesNotMatchSopClass },
  // No preamble/meta, Implicit VR LE RT Structure Set.
  'pydicom__rtstruct.dcm': { scan: 'ok', store: 'stored' },
};

describe('malformed shared DICOM files', () => {
  it('has an expected outcome for every file in malformed/', () => {
    expect(listSharedFiles('malformed').map((f) => f.slice('malformed/'.length))).toEqual(Object.keys(MALFORMED).sort());
  });

  it.each(Object.entries(MALFORMED))('%s', async (name, expected) => {
    const relative = `malformed/${name}`;
    if (expected.scan !== 'ok') {
      await expect(scanBytes(readShared(relative))).rejects.toMatchObject({ name: 'DicomInstanceError', failureReason: expected.scan });
      return;
    }
    expect(await validationOutcome(relative)).toBe(expected.store);
  });
});
