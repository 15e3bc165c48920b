/**
 * The elements of a derived ImagingStudy that come from DICOM values, built in one place for the
 * two writers of them: imaging-study-sync.ts (the stored ImagingStudy of a study, from the index)
 * and provisional-imaging-study.ts (the ImagingStudy one instance alone would give its study, for
 * the granular scope check of a STOW-RS). Sharing them keeps a scope check before a store and a
 * search after it in agreement.
 */
import type { Identifier, ImagingStudySeries, ImagingStudySeriesInstance } from '@medplum/fhirtypes';
import { DCM_SYSTEM, DICOM_UID_SYSTEM, lateralityCoding } from './dicom-codes';

/** `ImagingStudy.identifier`: the Study Instance UID (official) and the accession number (ACSN). */
export function studyIdentifiers(studyInstanceUID: string, accessionNumber: string | null | undefined): Identifier[] {
  return [
    { use: 'official', system: DICOM_UID_SYSTEM, value: `urn:oid:${studyInstanceUID}` },
    ...(accessionNumber ? [{ type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'ACSN' }] }, value: accessionNumber }] : []),
  ];
}

/**
 * A series' modality, body site and laterality: laterality from (0020,0060), else from the
 * instances' ImageLaterality (0020,0062) when they agree on R, L or B.
 */
export function seriesCodings(
  modality: string | null | undefined,
  bodyPartExamined: string | null | undefined,
  laterality: string | null | undefined,
  imageLateralities: ReadonlyArray<string | null | undefined>,
): Pick<ImagingStudySeries, 'modality' | 'bodySite' | 'laterality'> {
  const images = [...new Set(imageLateralities.filter((v) => v === 'R' || v === 'L' || v === 'B'))];
  const coding = lateralityCoding(laterality) ?? (images.length === 1 ? lateralityCoding(images[0]) : undefined);
  return {
    modality: { system: DCM_SYSTEM, code: modality ?? 'OT' },
    ...(bodyPartExamined ? { bodySite: { display: bodyPartExamined } } : {}),
    ...(coding ? { laterality: coding } : {}),
  };
}

/** A `series.instance` entry: the SOP Instance UID, its SOP Class as a URI, and its number when known. */
export function instanceEntry(sopInstanceUID: string, sopClassUID: string, number?: number | string | null): ImagingStudySeriesInstance {
  return {
    uid: sopInstanceUID,
    sopClass: { system: 'urn:ietf:rfc:3986', code: `urn:oid:${sopClassUID}` },
    ...(number !== null && number !== undefined ? { number: Number(number) } : {}),
  };
}
