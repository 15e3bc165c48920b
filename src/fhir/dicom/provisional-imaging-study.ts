import type { ImagingStudy } from '@medplum/fhirtypes';
import type { DicomJson, InstanceAttributes } from '../../dicom/types';
import { DCM_SYSTEM, DICOM_UID_SYSTEM, dateTimeOf, lateralityCoding } from './dicom-codes';

/**
 * The ImagingStudy search parameters whose values one instance determines on its own: in the
 * ImagingStudy that imaging-study-sync.ts writes for the instance's study, `identifier` (Study
 * Instance UID, AccessionNumber), `started` (StudyDate, StudyTime, TimezoneOffsetFromUTC),
 * `modality`, `bodysite` and `laterality` of its series, `series`, `instance`, `dicom-class`
 * (its UIDs) and `status`. The others (`patient`, `subject`, `_id`, `basedon`, ...) depend on the
 * index or on what clients added through FHIR, and cannot be told from an instance.
 */
export const INSTANCE_DERIVED_PARAMS: ReadonlySet<string> = new Set(['identifier', 'started', 'modality', 'bodysite', 'laterality', 'series', 'instance', 'dicom-class', 'status']);

/**
 * The ImagingStudy an instance alone would give its study, shaped element for element as
 * writeImagingStudy (imaging-study-sync.ts) derives it (keep the two in step), for the elements
 * behind INSTANCE_DERIVED_PARAMS: its search index rows (src/fhir/store/index-rows.ts) are then
 * those the stored ImagingStudy holds for this instance, before anything is stored.
 */
export function provisionalImagingStudy(a: InstanceAttributes, dataset: DicomJson): ImagingStudy {
  const tz = dataset['00080201']?.Value?.[0];
  const started = dateTimeOf(a.studyDate, a.studyTime, typeof tz === 'string' ? tz : null);
  // Series laterality from (0020,0060), else the instance's ImageLaterality (writeImagingStudy: when the instances agree).
  const image = a.imageLaterality === 'R' || a.imageLaterality === 'L' || a.imageLaterality === 'B' ? a.imageLaterality : undefined;
  const laterality = lateralityCoding(a.laterality) ?? lateralityCoding(image);
  return {
    resourceType: 'ImagingStudy',
    status: 'available',
    identifier: [
      { use: 'official', system: DICOM_UID_SYSTEM, value: `urn:oid:${a.studyInstanceUID}` },
      ...(a.accessionNumber ? [{ type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'ACSN' }] }, value: a.accessionNumber }] : []),
    ],
    subject: { display: 'not resolved yet' },
    ...(started ? { started } : {}),
    series: [
      {
        uid: a.seriesInstanceUID,
        modality: { system: DCM_SYSTEM, code: a.modality ?? 'OT' },
        ...(a.bodyPartExamined ? { bodySite: { display: a.bodyPartExamined } } : {}),
        ...(laterality ? { laterality } : {}),
        instance: [{ uid: a.sopInstanceUID, sopClass: { system: 'urn:ietf:rfc:3986', code: `urn:oid:${a.sopClassUID}` } }],
      },
    ],
  };
}
