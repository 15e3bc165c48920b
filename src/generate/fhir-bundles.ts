import { createHash } from 'node:crypto';
import type { Bundle, BundleEntry, Condition, Patient } from '@medplum/fhirtypes';
import { issuerSystem } from '../fhir/dicom/dicom-codes';
import type { EyeCode, PlannedPatient } from './population';

/**
 * FHIR transaction Bundles for planned patients: each Patient by conditional create on its MRN
 * (the identifier system imaging-lake gives the DICOM issuer, so the Patient a STOW made and this
 * one are the same resource, whichever arrives first) and its Conditions with ICD-10-CM codes,
 * the eye as bodySite, onset and, when resolved, abatement.
 */
export const ICD10_CM = 'http://hl7.org/fhir/sid/icd-10-cm';
const SNOMED = 'http://snomed.info/sct';
/** Conditions carry this identifier, so sending the same population again creates nothing new. */
export const GENERATED_CONDITION_SYSTEM = 'urn:imaging-lake:generated-condition';
const BODY_SITE: Record<EyeCode, { code: string; display: string }> = {
  R: { code: '18944008', display: 'Right eye structure' },
  L: { code: '8966001', display: 'Left eye structure' },
  B: { code: '40638003', display: 'Structure of both eyes' },
};

export function patientIdentifier(patient: PlannedPatient): { system: string; value: string } {
  return { system: issuerSystem(patient.institution.issuer), value: patient.mrn };
}

/** A stable urn:uuid per patient (so a re-run refers to the same entries). */
function patientFullUrl(patient: PlannedPatient): string {
  const h = createHash('sha256').update(`${patient.institution.issuer}|${patient.mrn}`).digest('hex');
  return `urn:uuid:${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

const isoDate = (dicom: string) => `${dicom.slice(0, 4)}-${dicom.slice(4, 6)}-${dicom.slice(6, 8)}`;

/** One transaction Bundle with the patients' Patient and Condition resources. */
export function buildTransactionBundle(patients: readonly PlannedPatient[]): Bundle {
  const entry: BundleEntry[] = [];
  for (const p of patients) {
    const fullUrl = patientFullUrl(p);
    const identifier = patientIdentifier(p);
    const patient: Patient = {
      resourceType: 'Patient',
      identifier: [{ ...identifier, type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] }, assigner: { display: p.institution.name } }],
      active: true,
      name: [{ family: p.family, given: [p.given] }],
      gender: p.sex === 'F' ? 'female' : 'male',
      birthDate: isoDate(p.birthDate),
    };
    entry.push({
      fullUrl,
      resource: patient,
      request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=${encodeURIComponent(`${identifier.system}|${identifier.value}`)}` },
    });
    p.conditions.forEach((c, i) => {
      const identifier = { system: GENERATED_CONDITION_SYSTEM, value: `${p.institution.issuer}-${p.mrn}-${i + 1}` };
      const condition: Condition = {
        resourceType: 'Condition',
        identifier: [identifier],
        clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: c.abatement ? 'resolved' : 'active' }] },
        verificationStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-ver-status', code: 'confirmed' }] },
        category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-category', code: 'encounter-diagnosis' }] }],
        code: { coding: [{ system: ICD10_CM, code: c.code, display: c.display }], text: c.display },
        bodySite: [{ coding: [{ system: SNOMED, ...BODY_SITE[c.eye] }] }],
        subject: { reference: fullUrl },
        onsetDateTime: c.onset,
        ...(c.abatement ? { abatementDateTime: c.abatement } : {}),
        recordedDate: c.onset,
      };
      entry.push({
        resource: condition,
        request: { method: 'POST', url: 'Condition', ifNoneExist: `identifier=${encodeURIComponent(`${identifier.system}|${identifier.value}`)}` },
      });
    });
  }
  return { resourceType: 'Bundle', type: 'transaction', entry };
}
