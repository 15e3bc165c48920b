/**
 * Whether a scanned instance may be stored: the identifying UIDs that the index and the blob
 * paths are built from, and the SOP class. Failure codes are the Store Instances failure
 * reasons of PS3.18 10.5.3, which reuse the C-STORE statuses of PS3.4 B.2.3.
 *
 * Decisions, each with its code:
 * - Media Storage Directory (DICOMDIR, 1.2.840.10008.1.3.10): a file-set index (PS3.10 7.2,
 *   PS3.3 F), not a composite instance of a Storage SOP Class, so STOW refuses it with 0x0122
 *   (Referenced SOP Class not supported). Checked first: a DICOMDIR also lacks study and
 *   series UIDs, and the reason given should be the real one.
 * - SOP Class, SOP Instance, Study or Series Instance UID missing or empty: 0xA900 (Data Set
 *   does not match SOP Class). They are Type 1 in the SOP Common, General Study and General
 *   Series modules of every storage IOD (PS3.3 C.12.1, C.7.2.1, C.7.3.1), so such a data set
 *   matches no storage SOP class.
 * - A UID that is not a valid UID (PS3.5 9.1): 0xC000 (Cannot understand). These values become
 *   URL segments and storage keys, so nothing but digits and dots, 64 characters at most,
 *   passes. Padding was already trimmed by the scanner (one trailing NUL or space).
 * - File Meta Media Storage SOP Instance/Class UID that differs from the data set's SOP
 *   Instance/Class UID (PS3.10 7.1 wants them equal): accepted, the data set wins. The data set
 *   is the instance; the meta is the file wrapper, and STOW-RS identifies and answers by the
 *   data set's UIDs (PS3.18 10.5.3, Referenced SOP Instance UID). Mismatches are common in the
 *   wild after editing tools touched only the data set (7 of the shared sample files, e.g.
 *   pydicom rtplan/rtdose, nibabel 0.dcm, the Japanese charset samples); refusing them would
 *   lose real data for a defect that does not affect what we index. Meta UIDs are never used
 *   as keys or paths, so they need no syntax check.
 * - An unknown but well-formed SOP Class UID (e.g. a private one) is accepted here: which
 *   classes a deployment stores is policy for the STOW service, not a defect of the instance.
 */
import { DicomInstanceError, ScannedInstance, StatusCode } from './types';

/** Media Storage Directory Storage, the SOP class of a DICOMDIR (PS3.6 Annex A, PS3.3 Annex F). */
export const MEDIA_STORAGE_DIRECTORY_SOP_CLASS = '1.2.840.10008.1.3.10';

const UID_COMPONENT = /^(0|[1-9][0-9]*)$/;

/** True when `uid` is a valid UID (PS3.5 9.1): at most 64 characters, dot-separated numeric components without leading zeros. */
export function isValidUid(uid: string): boolean {
  if (uid.length === 0 || uid.length > 64) return false;
  return uid.split('.').every((component) => UID_COMPONENT.test(component));
}

/** Refuses instances the archive must not store (PS3.18 10.5.3); throws DicomInstanceError with the failure reason. */
export function validateInstance(scanned: ScannedInstance): void {
  const a = scanned.attributes;
  // A DICOMDIR names its class only in the File Meta: its data set has no SOP Class UID.
  if (a.sopClassUID === MEDIA_STORAGE_DIRECTORY_SOP_CLASS || scanned.fileMeta?.mediaStorageSOPClassUID === MEDIA_STORAGE_DIRECTORY_SOP_CLASS) {
    throw new DicomInstanceError('a DICOMDIR (Media Storage Directory) is not a storable instance', StatusCode.NoSuchSopClass);
  }
  const required: [string, string][] = [
    ['SOPClassUID (0008,0016)', a.sopClassUID],
    ['SOPInstanceUID (0008,0018)', a.sopInstanceUID],
    ['StudyInstanceUID (0020,000D)', a.studyInstanceUID],
    ['SeriesInstanceUID (0020,000E)', a.seriesInstanceUID],
  ];
  for (const [name, value] of required) {
    if (!value) throw new DicomInstanceError(`${name} is missing`, StatusCode.DataSetDoesNotMatchSopClass);
  }
  for (const [name, value] of [...required, ['TransferSyntaxUID (0002,0010)', a.transferSyntaxUID] as [string, string]]) {
    if (!isValidUid(value)) {
      throw new DicomInstanceError(`${name} is not a valid UID: ${JSON.stringify(value.slice(0, 80))}`, StatusCode.CannotUnderstand);
    }
  }
}
