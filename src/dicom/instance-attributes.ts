/**
 * The typed columns the index keeps for each instance, read from its DICOM JSON
 * (PS3.18 table 10.6.1-5 match keys; PS3.3 C.7 and C.8 for the attributes).
 */
import type { DicomJson, DicomJsonElement, InstanceAttributes } from './types';

/** First value of an element as the raw (trimmed) DICOM string; PN in its `A=I=P` string form (PS3.5 6.2.1). */
export function readString(dataset: DicomJson | undefined, key: string): string | null {
  const value = dataset?.[key]?.Value?.[0];
  if (value === undefined || value === null) return null;
  if (typeof value === 'object') return personNameString(value as Record<string, string>);
  return String(value);
}

/** All values of an element joined by backslash, as they were encoded (empty values kept). */
function readJoined(dataset: DicomJson, key: string): string | null {
  const values = dataset[key]?.Value;
  if (!values?.length) return null;
  return values.map((v) => (v === null ? '' : String(v))).join('\\');
}

/** First value as an integer, or null when absent, empty or not an integer (e.g. IS '1A'). */
export function readInteger(dataset: DicomJson | undefined, key: string): number | null {
  const value = dataset?.[key]?.Value?.[0];
  return typeof value === 'number' && Number.isInteger(value) ? value : null;
}

function personNameString(name: Record<string, string>): string | null {
  const groups = [name.Alphabetic ?? '', name.Ideographic ?? '', name.Phonetic ?? ''];
  while (groups.length && groups[groups.length - 1] === '') groups.pop();
  return groups.length ? groups.join('=') : null;
}

function items(element: DicomJsonElement | undefined): DicomJson[] {
  return (element?.Value ?? []).filter((v): v is DicomJson => typeof v === 'object' && v !== null);
}

/**
 * FrameLaterality (0020,9072) from the Frame Anatomy Sequence (0020,9071) of the Shared (5200,9229)
 * and Per-Frame (5200,9230) Functional Groups (PS3.3 C.7.6.16.2.8), distinct, in first-seen order.
 */
function readFrameLateralities(dataset: DicomJson): string[] {
  const found = new Set<string>();
  for (const groupsKey of ['52009229', '52009230']) {
    for (const group of items(dataset[groupsKey])) {
      for (const anatomy of items(group['00209071'])) {
        const laterality = readString(anatomy, '00209072');
        if (laterality) found.add(laterality);
      }
    }
  }
  return [...found];
}

/** CodeValue (0008,0100) of each item of Acquisition Device Type Code Sequence (0022,0015) (PS3.3 C.8.17.5). */
function readAcquisitionDeviceTypeCodes(dataset: DicomJson): string[] {
  return items(dataset['00220015'])
    .map((item) => readString(item, '00080100'))
    .filter((code): code is string => code !== null);
}

/** Extracts the index columns from an instance's DICOM JSON; missing or malformed values become null, never errors. */
export function extractInstanceAttributes(dataset: DicomJson, transferSyntaxUID: string): InstanceAttributes {
  const s = (key: string) => readString(dataset, key);
  const n = (key: string) => readInteger(dataset, key);
  const frames = n('00280008');
  return {
    studyInstanceUID: s('0020000D') ?? '',
    seriesInstanceUID: s('0020000E') ?? '',
    sopInstanceUID: s('00080018') ?? '',
    sopClassUID: s('00080016') ?? '',
    transferSyntaxUID,
    specificCharacterSet: readJoined(dataset, '00080005'),

    patientID: s('00100020'),
    issuerOfPatientID: s('00100021'),
    patientName: s('00100010'),
    patientBirthDate: s('00100030'),
    patientSex: s('00100040'),

    studyDate: s('00080020'),
    studyTime: s('00080030'),
    accessionNumber: s('00080050'),
    studyID: s('00200010'),
    studyDescription: s('00081030'),
    referringPhysicianName: s('00080090'),
    institutionName: s('00080080'),

    modality: s('00080060'),
    seriesNumber: n('00200011'),
    seriesDescription: s('0008103E'),
    seriesDate: s('00080021'),
    seriesTime: s('00080031'),
    bodyPartExamined: s('00180015'),
    laterality: s('00200060'),
    manufacturer: s('00080070'),
    manufacturerModelName: s('00081090'),
    stationName: s('00081010'),
    acquisitionDeviceTypeCodes: readAcquisitionDeviceTypeCodes(dataset),
    performedProcedureStepStartDate: s('00400244'),
    performedProcedureStepStartTime: s('00400245'),

    instanceNumber: n('00200013'),
    imageLaterality: s('00200062'),
    frameLateralities: readFrameLateralities(dataset),
    numberOfFrames: frames !== null && frames > 0 ? frames : null,
    rows: n('00280010'),
    columns: n('00280011'),
    bitsAllocated: n('00280100'),
    bitsStored: n('00280101'),
    samplesPerPixel: n('00280002'),
    photometricInterpretation: s('00280004'),
    contentDate: s('00080023'),
    contentTime: s('00080033'),
    acquisitionDateTime: s('0008002A'),
  };
}
