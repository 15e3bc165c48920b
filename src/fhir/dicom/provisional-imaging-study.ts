import type { ImagingStudy } from '@medplum/fhirtypes';
import type { DicomJson, InstanceAttributes } from '../../dicom/types';
import { dateTimeOf } from './dicom-codes';
import { instanceEntry, seriesCodings, studyIdentifiers } from './imaging-study-elements';

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
 * The ImagingStudy an instance alone would give its study, for the elements behind
 * INSTANCE_DERIVED_PARAMS, built by the same element builders as the stored one
 * (imaging-study-elements.ts, used by imaging-study-sync.ts): its search index rows
 * (src/fhir/store/index-rows.ts) are then those the stored ImagingStudy holds for this instance,
 * before anything is stored.
 */
export function provisionalImagingStudy(a: InstanceAttributes, dataset: DicomJson): ImagingStudy {
  const tz = dataset['00080201']?.Value?.[0];
  const started = dateTimeOf(a.studyDate, a.studyTime, typeof tz === 'string' ? tz : null);
  return {
    resourceType: 'ImagingStudy',
    status: 'available',
    identifier: studyIdentifiers(a.studyInstanceUID, a.accessionNumber),
    subject: { display: 'not resolved yet' },
    ...(started ? { started } : {}),
    series: [
      {
        uid: a.seriesInstanceUID,
        ...seriesCodings(a.modality, a.bodyPartExamined, a.laterality, [a.imageLaterality]),
        instance: [instanceEntry(a.sopInstanceUID, a.sopClassUID)],
      },
    ],
  };
}
