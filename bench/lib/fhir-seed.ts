import fs from 'node:fs';
import zlib from 'node:zlib';
import { DEFAULT_ICD10CM_CODES_PATH } from '../../src/fhir/resources/icd10cm-codes';
import { createRandom } from '../../src/generate/random';

/**
 * Synthetic ophthalmology data for the FHIR benchmark, written through the engine as
 * transaction Bundles: per patient, ImagingStudy resources shaped like the ones the DICOM sync
 * writes (OPT/OP series with SNOMED laterality, instances, endpoint) and Condition resources with
 * ICD-10-CM eye codes (validated against the code list on the way in), SNOMED eye body sites,
 * clinical status, onset and abatement. Deterministic for a given seed.
 */

export const ICD10 = 'http://hl7.org/fhir/sid/icd-10-cm';
const SCT = 'http://snomed.info/sct';
const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const CLINICAL = 'http://terminology.hl7.org/CodeSystem/condition-clinical';
export const MRN_SYSTEM = 'urn:imaging-lake:bench:mrn';
/** Per patient: this many ImagingStudy and this many Condition resources. */
export const PER_PATIENT = 4;
/** Patients per transaction Bundle (each brings 1 + 2 x PER_PATIENT resources). */
export const PATIENTS_PER_BUNDLE = 20;

const LATERALITY = {
  R: { system: SCT, code: '24028007', display: 'Right' },
  L: { system: SCT, code: '7771000', display: 'Left' },
  B: { system: SCT, code: '51440002', display: 'Right and left' },
};
const EYE = {
  R: { system: SCT, code: '18944008', display: 'Right eye structure' },
  L: { system: SCT, code: '8966001', display: 'Left eye structure' },
  B: { system: SCT, code: '40638003', display: 'Structure of both eyes' },
};
const NAION = ['H47.011', 'H47.012', 'H47.013', 'H47.019'];

/** Billable ICD-10-CM codes of the eye chapter (H00-H59) from the shipped list. */
export function eyeCodes(): string[] {
  const text = zlib.gunzipSync(fs.readFileSync(DEFAULT_ICD10CM_CODES_PATH)).toString('utf8');
  return text.split('\n').filter((c) => /^H[0-5]\d/.test(c) && !c.endsWith('*'));
}

/** Builds the transaction Bundles for `patients` patients (numbered from `first`). */
export function buildSeedBundles(patients: number, first: number, runTag: string, seed = 42): Array<Record<string, unknown>> {
  const rnd = createRandom(seed + first).next;
  const codes = eyeCodes();
  const pick = <T>(list: readonly T[]) => list[Math.floor(rnd() * list.length)];
  const day = (from: number, span: number) => new Date(Date.UTC(from, 0, 1) + Math.floor(rnd() * span) * 86_400_000).toISOString().slice(0, 10);
  const uid = () => `2.25.${Math.floor(rnd() * 1e15)}${Math.floor(rnd() * 1e15)}`;
  const bundles: Array<Record<string, unknown>> = [];
  for (let b = 0; b < patients; b += PATIENTS_PER_BUNDLE) {
    const entry: unknown[] = [];
    for (let p = b; p < Math.min(patients, b + PATIENTS_PER_BUNDLE); p++) {
      const n = first + p;
      const fullUrl = `urn:uuid:00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
      entry.push({
        fullUrl,
        resource: {
          resourceType: 'Patient',
          identifier: [{ system: MRN_SYSTEM, value: `${runTag}-${n}` }],
          active: true,
          name: [{ family: `Family${n % 5000}`, given: [`Given${n}`] }],
          gender: rnd() < 0.5 ? 'female' : 'male',
          birthDate: day(1935, 60 * 365),
        },
        request: { method: 'POST', url: 'Patient' },
      });
      for (let s = 0; s < PER_PATIENT; s++) entry.push({ resource: imagingStudy(fullUrl), request: { method: 'POST', url: 'ImagingStudy' } });
      for (let c = 0; c < PER_PATIENT; c++) entry.push({ resource: condition(fullUrl), request: { method: 'POST', url: 'Condition' } });
    }
    bundles.push({ resourceType: 'Bundle', type: 'transaction', entry });
  }
  return bundles;

  function imagingStudy(subject: string): Record<string, unknown> {
    const r = rnd();
    const modality = r < 0.5 ? 'OPT' : r < 0.8 ? 'OP' : r < 0.9 ? 'CT' : 'MR';
    const eye = modality === 'OPT' || modality === 'OP' ? (rnd() < 0.45 ? 'R' : rnd() < 0.82 ? 'L' : 'B') : undefined;
    const started = day(2015, 10 * 365);
    const instances = 2 + Math.floor(rnd() * 3);
    return {
      resourceType: 'ImagingStudy',
      status: 'available',
      identifier: [{ use: 'official', system: 'urn:dicom:uid', value: `urn:oid:${uid()}` }],
      subject: { reference: subject },
      started,
      modality: [{ system: DCM, code: modality }],
      numberOfSeries: 1,
      numberOfInstances: instances,
      description: modality === 'OPT' ? 'OCT macula cube' : modality === 'OP' ? 'Fundus photography' : 'Orbits',
      endpoint: [{ reference: 'Endpoint/dicomweb' }],
      series: [
        {
          uid: uid(),
          number: 1,
          modality: { system: DCM, code: modality },
          numberOfInstances: instances,
          ...(eye ? { laterality: LATERALITY[eye] } : {}),
          started,
          instance: Array.from({ length: instances }, (_, i) => ({
            uid: uid(),
            sopClass: { system: 'urn:ietf:rfc:3986', code: modality === 'OPT' ? 'urn:oid:1.2.840.10008.5.1.4.1.1.77.1.5.4' : 'urn:oid:1.2.840.10008.5.1.4.1.1.77.1.5.1' },
            number: i + 1,
          })),
        },
      ],
    };
  }

  function condition(subject: string): Record<string, unknown> {
    const code = rnd() < 0.05 ? pick(NAION) : pick(codes);
    const eye = pick(['R', 'L', 'B'] as const);
    const onset = day(2010, 12 * 365);
    const resolved = rnd() < 0.3;
    return {
      resourceType: 'Condition',
      clinicalStatus: { coding: [{ system: CLINICAL, code: resolved ? 'resolved' : 'active' }] },
      verificationStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-ver-status', code: 'confirmed' }] },
      category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-category', code: 'encounter-diagnosis' }] }],
      code: { coding: [{ system: ICD10, code }] },
      bodySite: [{ coding: [EYE[eye]] }],
      subject: { reference: subject },
      onsetDateTime: onset,
      ...(resolved ? { abatementDateTime: `${Number(onset.slice(0, 4)) + 1}${onset.slice(4)}` } : {}),
      recordedDate: onset,
    };
  }
}

/** Resources in a seed of `patients` patients. */
export const resourcesPerPatient = 1 + 2 * PER_PATIENT;

/** Result of posting Bundles. */
export interface IngestResult {
  bundles: number;
  resources: number;
  seconds: number;
  failures: string[];
}

/** Posts transaction Bundles with `concurrency` in flight; counts resources acknowledged 201. */
export async function postBundles(baseUrl: string, authorization: string, bundles: Array<Record<string, unknown>>, concurrency: number): Promise<IngestResult> {
  const bodies = bundles.map((b) => JSON.stringify(b));
  const failures: string[] = [];
  let resources = 0;
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < bodies.length) {
      const body = bodies[next++];
      const res = await fetch(`${baseUrl}/fhir`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/fhir+json', Prefer: 'return=minimal', Authorization: authorization },
        body,
      });
      const text = await res.text();
      if (res.status !== 200) {
        failures.push(`${res.status} ${text.slice(0, 300)}`);
        continue;
      }
      const answer = JSON.parse(text) as { entry?: Array<{ response?: { status?: string } }> };
      resources += (answer.entry ?? []).filter((e) => e.response?.status?.startsWith('201')).length;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { bundles: bodies.length, resources, seconds: (performance.now() - t0) / 1000, failures };
}
