import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { DEFAULT_ICD10CM_CODES_PATH } from '../../../src/fhir/resources/icd10cm-codes';
import { buildTransactionBundle, GENERATED_CONDITION_SYSTEM, ICD10_CM } from '../../../src/generate/fhir-bundles';
import { INSTITUTIONS, MODALITIES, planPopulation, type PopulationOptions } from '../../../src/generate/population';
import { createRandom } from '../../../src/generate/random';
import { buildInstance, planStudyInstances, SOP_CLASSES } from '../../../src/generate/study-instances';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const dcmjs = require('dcmjs');

/**
 * The synthetic population behind `imaging-lake generate`: deterministic per seed, spread over
 * the modalities, both eyes and both issuers, with valid ICD-10-CM codes, onsets before the
 * imaging, and DICOM objects that a validator accepts for their IOD.
 */
const OPTIONS: PopulationOptions = { patients: 200, studiesPerPatient: 3, modalities: [...MODALITIES], seed: 7, from: '20150101', to: '20251231' };

function naturalize(bytes: Buffer): Record<string, unknown> {
  const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);
  return dcmjs.data.DicomMetaDictionary.naturalizeDataset(dcmjs.data.DicomMessage.readFile(ab).dict);
}

describe('the population plan', () => {
  const patients = [...planPopulation(OPTIONS)];
  const studies = patients.flatMap((p) => p.studies);

  test('is the same for the same seed, UIDs included, and differs for another seed', () => {
    expect([...planPopulation(OPTIONS)]).toEqual(patients);
    const other = [...planPopulation({ ...OPTIONS, seed: 8 })];
    expect(other.map((p) => p.studies[0].uid)).not.toEqual(patients.map((p) => p.studies[0].uid));
    // Patient n does not depend on how many patients are planned.
    expect([...planPopulation({ ...OPTIONS, patients: 3 })]).toEqual(patients.slice(0, 3));
  });

  test('has MRNs under both issuers, every modality, both eyes and studies in the date range', () => {
    expect(new Set(patients.map((p) => `${p.institution.issuer}|${p.mrn}`)).size).toBe(200);
    expect(new Set(patients.map((p) => p.institution.issuer))).toEqual(new Set(INSTITUTIONS.map((i) => i.issuer)));
    expect(new Set(studies.map((s) => s.modality))).toEqual(new Set(MODALITIES));
    expect(new Set(studies.flatMap((s) => s.eyes))).toEqual(new Set(['R', 'L']));
    expect(new Set(studies.map((s) => s.device.model)).size).toBeGreaterThanOrEqual(10);
    for (const s of studies) {
      expect(s.date >= '20150101' && s.date <= '20251231').toBe(true);
      expect(s.uid).toMatch(/^2\.25\.[1-9]\d{38}$/);
      expect(s.eyes.length > 0).toBe(['OPT', 'OP', 'OPV'].includes(s.modality));
    }
    expect(new Set(studies.map((s) => s.uid)).size).toBe(studies.length);
  });

  test('keeps to the modalities asked for', () => {
    const only = [...planPopulation({ ...OPTIONS, patients: 50, modalities: ['OPT', 'OPV'] })].flatMap((p) => p.studies);
    expect(new Set(only.map((s) => s.modality))).toEqual(new Set(['OPT', 'OPV']));
  });

  test('gives conditions valid ICD-10-CM codes whose onset comes before the first visit', () => {
    const codes = new Set(zlib.gunzipSync(fs.readFileSync(DEFAULT_ICD10CM_CODES_PATH)).toString('utf8').split('\n'));
    const conditions = patients.flatMap((p) => p.conditions.map((c) => ({ c, first: p.studies[0].date })));
    expect(conditions.length).toBeGreaterThan(150);
    for (const { c, first } of conditions) {
      expect(codes.has(c.code)).toBe(true);
      expect(c.onset.replace(/-/g, '') <= first).toBe(true);
      if (c.abatement) expect(c.abatement > c.onset).toBe(true);
    }
    expect(new Set(conditions.map(({ c }) => c.eye))).toEqual(new Set(['R', 'L', 'B']));
  });

  test('seeded UIDs are 2.25 UIDs of at most 64 characters', () => {
    const rnd = createRandom(1);
    for (let i = 0; i < 100; i++) expect(rnd.uid()).toMatch(/^2\.25\.[1-9]\d{38}$/);
  });
});

describe('DICOM objects of a visit', () => {
  const patients = [...planPopulation({ ...OPTIONS, patients: 60 })];
  const visitOf = (modality: string) => {
    for (const p of patients) for (const s of p.studies) if (s.modality === modality && s.eyes.length !== 1) return { p, s };
    throw new Error(`no ${modality} visit`);
  };

  test('an OCT volume per eye: multi-frame, device type, image and frame laterality', () => {
    const { p, s } = visitOf('OPT');
    const planned = planStudyInstances(p, s, 'small');
    expect(planned).toHaveLength(2);
    const ds = naturalize(buildInstance(planned[0]));
    expect(ds.SOPClassUID).toBe(SOP_CLASSES.OPT);
    expect(ds.PatientID).toBe(p.mrn);
    expect(ds.IssuerOfPatientID).toBe(p.institution.issuer);
    expect(Number(ds.NumberOfFrames)).toBe(16);
    expect(ds.ImageLaterality).toBe('R');
    expect(ds.Laterality).toBeUndefined();
    expect((ds.AcquisitionDeviceTypeCodeSequence as Array<{ CodeValue: string }>)[0].CodeValue).toBe('392012008');
    const shared = (ds.SharedFunctionalGroupsSequence as Array<Record<string, Array<Record<string, unknown>>>>)[0];
    expect(shared.FrameAnatomySequence[0].FrameLaterality).toBe('R');
    expect(ds.PerFrameFunctionalGroupsSequence).toHaveLength(16);
    expect(ds.ManufacturerModelName).toBe(s.device.model);
    expect(naturalize(buildInstance(planned[1])).ImageLaterality).toBe('L');
  });

  test('fundus photos are RGB, visual fields carry no pixel data, CT and MR are series of slices', () => {
    const op = visitOf('OP');
    const photo = naturalize(buildInstance(planStudyInstances(op.p, op.s, 'small')[0]));
    expect(photo).toMatchObject({ SOPClassUID: SOP_CLASSES.OP, SamplesPerPixel: 3, PhotometricInterpretation: 'RGB' });
    const opv = visitOf('OPV');
    const field = naturalize(buildInstance(planStudyInstances(opv.p, opv.s, 'small')[0]));
    expect(field.SOPClassUID).toBe(SOP_CLASSES.OPV);
    expect(field.PixelData).toBeUndefined();
    expect(field.VisualFieldTestPointSequence).toHaveLength(54);
    const ct = visitOf('CT');
    const slices = planStudyInstances(ct.p, ct.s, 'small');
    expect(slices).toHaveLength(8);
    expect(new Set(slices.map((i) => i.options.seriesInstanceUID)).size).toBe(1);
    expect(new Set(slices.map((i) => i.options.sopInstanceUID)).size).toBe(8);
    // The same plan builds the same bytes.
    expect(buildInstance(slices[0]).equals(buildInstance(planStudyInstances(ct.p, ct.s, 'small')[0]))).toBe(true);
  });

  const HAS_DCIODVFY = spawnSync('which', ['dciodvfy']).status === 0;
  (HAS_DCIODVFY ? test : test.skip)('dciodvfy finds no error in any modality (but the OPT concatenation attributes it wants on a non-concatenation)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'il-generate-'));
    try {
      const errors: string[] = [];
      for (const modality of MODALITIES) {
        const { p, s } = visitOf(modality);
        const file = path.join(dir, `${modality}.dcm`);
        fs.writeFileSync(file, buildInstance(planStudyInstances(p, s, 'small')[0]));
        const out = spawnSync('dciodvfy', [file], { encoding: 'utf8' });
        errors.push(...`${out.stdout}${out.stderr}`.split('\n').filter((l) => l.startsWith('Error')).map((l) => `${modality}: ${l}`));
      }
      // dciodvfy lists these as type 1 in the OPT image module, while the multi-frame module
      // forbids them outside a concatenation; a single-object volume is not one.
      const concatenation = /^OPT: Error - Missing attribute Type 1 Required Element=<(ConcatenationFrameOffsetNumber|InConcatenationNumber|InConcatenationTotalNumber)>/;
      expect(errors.filter((e) => !concatenation.test(e))).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('FHIR transaction Bundles', () => {
  test('a conditional Patient per MRN and its Conditions, each with an identifier for idempotent re-sends', () => {
    const patients = [...planPopulation({ ...OPTIONS, patients: 5 })];
    const bundle = buildTransactionBundle(patients);
    expect(bundle.type).toBe('transaction');
    const patientEntries = bundle.entry!.filter((e) => e.resource?.resourceType === 'Patient');
    expect(patientEntries).toHaveLength(5);
    expect(patientEntries[0].request?.ifNoneExist).toBe(`identifier=${encodeURIComponent(`urn:imaging-lake:issuer:${patients[0].institution.issuer}|${patients[0].mrn}`)}`);
    const conditions = bundle.entry!.filter((e) => e.resource?.resourceType === 'Condition');
    expect(conditions).toHaveLength(patients.reduce((n, p) => n + p.conditions.length, 0));
    for (const c of conditions) {
      const r = c.resource as { code: { coding: Array<{ system: string }> }; subject: { reference: string }; identifier: Array<{ system: string }> };
      expect(r.code.coding[0].system).toBe(ICD10_CM);
      expect(patientEntries.map((e) => e.fullUrl)).toContain(r.subject.reference);
      expect(c.request?.ifNoneExist).toContain(encodeURIComponent(GENERATED_CONDITION_SYSTEM));
    }
  });
});
