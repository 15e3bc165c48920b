/**
 * The column-level policy on DICOMweb answers (issue 5: "patient identifiers visible to Admin
 * only"), for callers who see identified data with some elements withheld: a data manager. The
 * policy matrix (src/auth/policy-fields.ts) names FHIR elements; this maps each to the DICOM
 * attributes that carry the same facts, so QIDO-RS results, WADO-RS metadata and retrieved
 * Part 10 instances withhold what the FHIR answers to the same token withhold.
 *
 * A masked attribute keeps its VR and its place, and its value becomes `***` (as the FHIR mask
 * does); a hidden one is left out. Attributes are found at any depth (an AccessionNumber in a
 * Request Attributes Sequence, a PatientID in an Other Patient IDs Sequence item). Issuers and
 * the role of a responsible person stay, as a FHIR identifier keeps its system and a contact
 * its relationship. Matching is not changed: a data manager still finds a patient's studies by
 * PatientID (the reconciliation work the role exists for); only the answers withhold it.
 */
import { MASKED_VALUE as MASK, type FieldRules } from '../auth/policy-fields';
import type { DicomJson, DicomJsonElement } from '../dicom/types';

/**
 * FHIR element -> the DICOM attributes (tags, as DICOM JSON keys) that hold the same facts
 * (PS3.3 C.7.1.1 Patient Module, C.7.2.1 General Study Module; the Patient resource is made from
 * the first, the ImagingStudy's identifiers from the second).
 */
const ATTRIBUTES_OF: Record<string, Record<string, readonly string[]>> = {
  Patient: {
    // PatientID, OtherPatientIDs (retired, still sent), MedicalRecordLocator; the PatientIDs of an
    // Other Patient IDs Sequence are found by the walk.
    identifier: ['00100020', '00101000', '00101090'],
    // PatientTelephoneNumbers, PatientTelecomInformation.
    telecom: ['00102154', '00102155'],
    // PatientAddress, CountryOfResidence, RegionOfResidence.
    address: ['00101040', '00102150', '00102152'],
    // ResponsiblePerson, ResponsibleOrganization.
    contact: ['00102297', '00102299'],
  },
  ImagingStudy: {
    // AccessionNumber (ImagingStudy.identifier of type ACSN); the Study Instance UID is a UID, not a person's identifier.
    identifier: ['00080050'],
  },
};

/** A column-level mask for DICOM JSON data sets; the same for every answer of one request. */
export interface IdentifierMask {
  /** Tags whose value is replaced by the mask. */
  readonly masked: ReadonlySet<string>;
  /** Tags left out. */
  readonly hidden: ReadonlySet<string>;
  /** A copy of `dataset` with the masked and hidden attributes treated, at every depth; `dataset` itself is not changed. */
  apply(dataset: DicomJson): DicomJson;
  /** A text that changes whenever the treatment does (for caches of masked output). */
  readonly key: string;
}

/**
 * The mask the policy's rules call for, or undefined when they withhold nothing of what DICOM
 * carries (an admin, or a caller without rules).
 */
export function createIdentifierMask(rulesFor: ((resourceType: string) => FieldRules) | undefined): IdentifierMask | undefined {
  if (!rulesFor) return undefined;
  const masked = new Set<string>();
  const hidden = new Set<string>();
  for (const [type, elements] of Object.entries(ATTRIBUTES_OF)) {
    const rules = rulesFor(type);
    for (const [path, tags] of Object.entries(elements)) {
      const into = rules.hidden.includes(path) ? hidden : rules.masked.includes(path) ? masked : undefined;
      for (const tag of tags) into?.add(tag);
    }
  }
  if (masked.size === 0 && hidden.size === 0) return undefined;
  const key = `m:${[...masked].sort().join(',')};h:${[...hidden].sort().join(',')}`;
  return { masked, hidden, key, apply: (dataset) => maskDataset(dataset, masked, hidden) };
}

function maskDataset(dataset: DicomJson, masked: ReadonlySet<string>, hidden: ReadonlySet<string>): DicomJson {
  let out: DicomJson | undefined;
  const write = (tag: string, element: DicomJsonElement | undefined) => {
    out ??= { ...dataset };
    if (element) out[tag] = element;
    else delete out[tag];
  };
  for (const [tag, element] of Object.entries(dataset)) {
    if (hidden.has(tag)) {
      write(tag, undefined);
    } else if (masked.has(tag)) {
      if (hasValue(element)) write(tag, { vr: element.vr, Value: [element.vr === 'PN' ? { Alphabetic: MASK } : MASK] });
    } else if (element.vr === 'SQ' && Array.isArray(element.Value)) {
      let changed = false;
      const items = element.Value.map((item) => {
        if (!item || typeof item !== 'object') return item;
        const next = maskDataset(item as DicomJson, masked, hidden);
        if (next !== item) changed = true;
        return next;
      });
      if (changed) write(tag, { ...element, Value: items });
    }
  }
  return out ?? dataset;
}

/** True when the element carries a value (an empty attribute says nothing and stays empty). */
function hasValue(element: DicomJsonElement): boolean {
  return (Array.isArray(element.Value) && element.Value.some((v) => v !== null && v !== '')) || element.InlineBinary !== undefined || element.BulkDataURI !== undefined;
}
