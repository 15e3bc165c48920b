/** Code systems and mappings used when DICOM attributes become FHIR elements. */

/** DICOM Controlled Terminology (modalities), FHIR R4 ImagingStudy.modality binding. */
export const DCM_SYSTEM = 'http://dicom.nema.org/resources/ontology/DCM';
export const SNOMED_SYSTEM = 'http://snomed.info/sct';
/** ImagingStudy.identifier system for the Study Instance UID (FHIR R4 ImagingStudy notes). */
export const DICOM_UID_SYSTEM = 'urn:dicom:uid';

/** DICOM Laterality (0020,0060) -> SNOMED CT laterality (FHIR R4 ImagingStudy.series.laterality, value set bodysite-laterality). */
const LATERALITY: Record<string, { code: string; display: string }> = {
  R: { code: '24028007', display: 'Right' },
  L: { code: '7771000', display: 'Left' },
  B: { code: '51440002', display: 'Right and left' },
};

/** The laterality Coding for a DICOM Laterality value, or undefined. */
export function lateralityCoding(value: string | null | undefined): { system: string; code: string; display: string } | undefined {
  const entry = value ? LATERALITY[value.trim().toUpperCase()] : undefined;
  return entry ? { system: SNOMED_SYSTEM, ...entry } : undefined;
}

/** The FHIR identifier system for a DICOM IssuerOfPatientID (an OID becomes urn:oid:, free text a URN of ours). */
export function issuerSystem(issuer: string | null | undefined): string {
  const text = issuer?.trim();
  if (!text) return 'urn:imaging-lake:patient-id';
  if (/^[0-2](\.(0|[1-9]\d*))+$/.test(text)) return `urn:oid:${text}`;
  return `urn:imaging-lake:issuer:${encodeURIComponent(text)}`;
}

/** DICOM sex (M/F/O) -> FHIR administrative gender. */
export function genderOf(sex: string | null | undefined): 'male' | 'female' | 'other' | 'unknown' | undefined {
  switch (sex?.trim().toUpperCase()) {
    case 'M':
      return 'male';
    case 'F':
      return 'female';
    case 'O':
      return 'other';
    default:
      return undefined;
  }
}

/** DICOM PN (family^given^middle^prefix^suffix, alphabetic group) -> FHIR HumanName. */
export function humanNameOf(pn: string | null | undefined): { family?: string; given?: string[]; prefix?: string[]; suffix?: string[]; text?: string } | undefined {
  const alphabetic = pn?.split('=')[0]?.trim();
  if (!alphabetic) return undefined;
  const [family, given, middle, prefix, suffix] = alphabetic.split('^').map((p) => p.trim());
  const name: { family?: string; given?: string[]; prefix?: string[]; suffix?: string[]; text?: string } = {};
  if (family) name.family = family;
  const givens = [given, middle].filter((g): g is string => Boolean(g));
  if (givens.length) name.given = givens;
  if (prefix) name.prefix = [prefix];
  if (suffix) name.suffix = [suffix];
  name.text = [prefix, given, middle, family, suffix].filter(Boolean).join(' ');
  return name;
}

/**
 * DICOM DA + TM (+ TimezoneOffsetFromUTC) -> FHIR dateTime. FHIR requires a zone whenever a
 * time is given (R4 2.24.0.1 dateTime), and DICOM times are local: without the offset only the
 * date is stated rather than inventing a zone.
 */
export function dateTimeOf(date: string | Date | null | undefined, time: string | null | undefined, tzOffset?: string | null): string | undefined {
  if (!date) return undefined;
  const d = typeof date === 'string' ? date : date.toISOString().slice(0, 10);
  const ymd = /^(\d{4})-?(\d{2})-?(\d{2})/.exec(d);
  if (!ymd) return undefined;
  const day = `${ymd[1]}-${ymd[2]}-${ymd[3]}`;
  const t = time ? /^(\d{2})(\d{2})?(\d{2})?/.exec(time.trim()) : null;
  const z = tzOffset ? /^([+-])(\d{2})(\d{2})$/.exec(tzOffset.trim()) : null;
  if (!t || !z) return day;
  return `${day}T${t[1]}:${t[2] ?? '00'}:${t[3] ?? '00'}${z[1]}${z[2]}:${z[3]}`;
}
