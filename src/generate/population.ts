import { createRandom, type Random } from './random';

/**
 * The plan of a synthetic research population: patients with an MRN from one of two issuing
 * institutions, eye diagnoses (ICD-10-CM codes with their eye, onset and, for some, abatement)
 * and imaging visits across CT, MR and the ophthalmic modalities (OPT volumes, OP fundus photos,
 * OPV visual fields) on plausible dates after the onset, with the eyes the visit imaged and the
 * device that took it. Everything is invented; the same seed gives the same plan.
 */
export const MODALITIES = ['CT', 'MR', 'OPT', 'OP', 'OPV'] as const;
export type Modality = (typeof MODALITIES)[number];
export type Eye = 'R' | 'L';
export type EyeCode = Eye | 'B';

export interface Device {
  manufacturer: string;
  model: string;
  serial: string;
  software: string;
}

export interface Institution {
  /** IssuerOfPatientID (0010,0021) of the MRNs it assigns. */
  issuer: string;
  name: string;
}

export interface PlannedCondition {
  code: string;
  display: string;
  eye: EyeCode;
  /** YYYY-MM-DD */
  onset: string;
  /** YYYY-MM-DD when resolved. */
  abatement?: string;
}

export interface PlannedStudy {
  uid: string;
  modality: Modality;
  /** YYYYMMDD */
  date: string;
  /** HHMMSS */
  time: string;
  accession: string;
  description: string;
  /** The eyes imaged (ophthalmic modalities); empty for CT and MR. */
  eyes: Eye[];
  device: Device;
}

export interface PlannedPatient {
  mrn: string;
  institution: Institution;
  family: string;
  given: string;
  sex: 'F' | 'M';
  /** YYYYMMDD */
  birthDate: string;
  conditions: PlannedCondition[];
  studies: PlannedStudy[];
}

export interface PopulationOptions {
  patients: number;
  /** Mean imaging visits per patient (each patient has 1 to 2 x this - 1). */
  studiesPerPatient: number;
  modalities: readonly Modality[];
  seed: number;
  /** Study dates fall in [from, to], YYYYMMDD. */
  from: string;
  to: string;
}

export const INSTITUTIONS: readonly Institution[] = [
  { issuer: 'LAKE-EYE', name: 'Lakeside Eye Clinic' },
  { issuer: 'HARBOR-GEN', name: 'Harbor General Hospital' },
];

/** Diagnoses with their ICD-10-CM code for the right eye, the left eye and both eyes. */
export const DIAGNOSES: ReadonlyArray<{ display: string; codes: Record<EyeCode, string> }> = [
  { display: 'Anterior ischemic optic neuropathy', codes: { R: 'H47.011', L: 'H47.012', B: 'H47.013' } },
  { display: 'Age-related nuclear cataract', codes: { R: 'H25.11', L: 'H25.12', B: 'H25.13' } },
  { display: 'Primary open-angle glaucoma, mild stage', codes: { R: 'H40.1111', L: 'H40.1121', B: 'H40.1131' } },
  { display: 'Exudative age-related macular degeneration with active choroidal neovascularization', codes: { R: 'H35.3211', L: 'H35.3221', B: 'H35.3231' } },
  { display: 'Nonexudative age-related macular degeneration, early dry stage', codes: { R: 'H35.3111', L: 'H35.3121', B: 'H35.3131' } },
  { display: 'Type 2 diabetes mellitus with mild nonproliferative diabetic retinopathy without macular edema', codes: { R: 'E11.3291', L: 'E11.3292', B: 'E11.3293' } },
  { display: 'Type 2 diabetes mellitus with proliferative diabetic retinopathy with macular edema', codes: { R: 'E11.3511', L: 'E11.3512', B: 'E11.3513' } },
  { display: 'Retinal detachment with single break', codes: { R: 'H33.011', L: 'H33.012', B: 'H33.013' } },
  { display: 'Central serous chorioretinopathy', codes: { R: 'H35.711', L: 'H35.712', B: 'H35.713' } },
  { display: 'Myopia', codes: { R: 'H52.11', L: 'H52.12', B: 'H52.13' } },
  { display: 'Optic papillitis', codes: { R: 'H46.01', L: 'H46.02', B: 'H46.03' } },
  { display: 'Central retinal vein occlusion with macular edema', codes: { R: 'H34.8110', L: 'H34.8120', B: 'H34.8130' } },
];

/** Two devices per modality, so searches by model have something to tell apart. */
const DEVICES: Record<Modality, ReadonlyArray<Omit<Device, 'serial'>>> = {
  OPT: [
    { manufacturer: 'Lakeside Optics', model: 'LX-OCT 700', software: '6.16.2' },
    { manufacturer: 'Northfield Instruments', model: 'NF Cirrus-S', software: '11.5.1' },
  ],
  OP: [
    { manufacturer: 'Lakeside Optics', model: 'LX-Fundus 3', software: '2.4.0' },
    { manufacturer: 'Northfield Instruments', model: 'NF Retina Cam 50', software: '5.1.7' },
  ],
  OPV: [
    { manufacturer: 'Northfield Instruments', model: 'NF Field Analyzer 3', software: '1.5.4' },
    { manufacturer: 'Lakeside Optics', model: 'LX-Perimeter 900', software: '4.0.2' },
  ],
  CT: [
    { manufacturer: 'Harbor Imaging Systems', model: 'HI-CT 64', software: 'VB20A' },
    { manufacturer: 'Harbor Imaging Systems', model: 'HI-CT 128 Edge', software: 'VB40B' },
  ],
  MR: [
    { manufacturer: 'Harbor Imaging Systems', model: 'HI-MR 1.5T', software: 'E11C' },
    { manufacturer: 'Harbor Imaging Systems', model: 'HI-MR 3T Prisma', software: 'E11E' },
  ],
};

const DESCRIPTIONS: Record<Modality, readonly string[]> = {
  OPT: ['OCT macula cube 512x128', 'OCT optic disc cube 200x200', 'OCT macular volume'],
  OP: ['Color fundus photography', 'Fundus photography 45 degrees'],
  OPV: ['Visual field 24-2 SITA Standard', 'Visual field 30-2 SITA Fast', 'Visual field 10-2'],
  CT: ['CT orbits without contrast', 'CT head without contrast'],
  MR: ['MR orbits with and without contrast', 'MR brain and optic nerves'],
};

/** Visit mix of an ophthalmology research population. */
const VISIT_WEIGHTS: Record<Modality, number> = { OPT: 35, OP: 25, OPV: 15, CT: 15, MR: 10 };

// Invented names; some with accents and particles so fuzzy matching has work to do.
const FAMILY = ['Lindqvist', 'Okafor', 'Martínez', 'Nakamura', 'Van der Berg', 'Øster', 'Kowalski', 'Haddad', 'Moreau', 'Brennan',
  'Schäfer', 'Rossi', 'Novak', 'Dubois', 'Ferreira', 'Iqbal', 'Larsen', 'Petrov', 'Quinn', 'Abernathy', "O'Neill", 'Zhou',
  'Müller-Lang', 'Castellanos', 'Whitfield'];
const GIVEN_F = ['Ada', 'Beatriz', 'Chiara', 'Dorota', 'Élodie', 'Fatima', 'Greta', 'Hana', 'Ingrid', 'Joan', 'Keiko', 'Leila', 'Maren', 'Noor', 'Rosalind'];
const GIVEN_M = ['Aarav', 'Bruno', 'Casimir', 'Dmitri', 'Emeka', 'Felix', 'Gustavo', 'Hiro', 'Ivan', 'Jonas', 'Kofi', 'Luc', 'Mateo', 'Nils', 'Søren'];

const DAY = 86_400_000;

function parseDate(yyyymmdd: string): number {
  return Date.UTC(Number(yyyymmdd.slice(0, 4)), Number(yyyymmdd.slice(4, 6)) - 1, Number(yyyymmdd.slice(6, 8)));
}

function dicomDate(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10).replace(/-/g, '');
}

function isoDate(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** Plans the whole population; cheap (no pixel data), so millions of patients are fine. */
export function* planPopulation(options: PopulationOptions): Generator<PlannedPatient> {
  const from = parseDate(options.from);
  const to = parseDate(options.to);
  for (let n = 0; n < options.patients; n++) {
    // One stream per patient: patient n is the same whatever the patient count.
    yield planPatient(createRandom(options.seed * 1_000_003 + n), n, options, from, to);
  }
}

function planPatient(rnd: Random, n: number, options: PopulationOptions, from: number, to: number): PlannedPatient {
  const institution = INSTITUTIONS[n % INSTITUTIONS.length];
  const sex = rnd.next() < 0.55 ? 'F' : 'M';
  const birth = Date.UTC(1935, 0, 1) + rnd.int(0, 55 * 365) * DAY;
  const span = Math.max(1, Math.round((to - from) / DAY));
  // A first visit somewhere in the window; diagnoses start up to 3 years before it.
  const firstVisit = from + rnd.int(0, Math.floor(span * 0.8)) * DAY;
  const conditions: PlannedCondition[] = [];
  const r = rnd.next();
  const diagnosisCount = r < 0.15 ? 0 : r < 0.6 ? 1 : r < 0.9 ? 2 : 3;
  for (let i = 0; i < diagnosisCount; i++) {
    const diagnosis = rnd.pick(DIAGNOSES);
    if (conditions.some((c) => c.display === diagnosis.display)) continue;
    const eye = rnd.weighted({ R: 40, L: 40, B: 20 });
    const onset = firstVisit - rnd.int(0, Math.max(0, Math.min(3 * 365, Math.floor((firstVisit - birth) / DAY) - 1))) * DAY;
    const resolved = rnd.next() < 0.2 ? onset + rnd.int(30, 720) * DAY : undefined;
    conditions.push({ code: diagnosis.codes[eye], display: diagnosis.display, eye, onset: isoDate(onset), ...(resolved ? { abatement: isoDate(resolved) } : {}) });
  }
  const studyCount = rnd.int(1, Math.max(1, 2 * options.studiesPerPatient - 1));
  const weights = Object.fromEntries(options.modalities.map((m) => [m, VISIT_WEIGHTS[m]])) as Record<Modality, number>;
  const studies: PlannedStudy[] = [];
  let visit = firstVisit;
  for (let s = 0; s < studyCount && visit <= to; s++) {
    const modality = rnd.weighted(weights);
    const affected = conditions.length ? rnd.pick(conditions).eye : rnd.pick(['R', 'L', 'B'] as const);
    const eyes: Eye[] = !isOphthalmic(modality) ? [] : rnd.next() < 0.6 || affected === 'B' ? ['R', 'L'] : [affected];
    const device = rnd.pick(DEVICES[modality]);
    studies.push({
      uid: rnd.uid(),
      modality,
      date: dicomDate(visit),
      time: `${String(rnd.int(7, 17)).padStart(2, '0')}${String(rnd.int(0, 59)).padStart(2, '0')}${String(rnd.int(0, 59)).padStart(2, '0')}`,
      accession: `A${String(n + 1).padStart(7, '0')}${String(s + 1).padStart(2, '0')}`,
      description: rnd.pick(DESCRIPTIONS[modality]),
      eyes,
      device: { ...device, serial: `SN${String(rnd.int(10000, 99999))}` },
    });
    // Follow-up visits every 1 to 12 months.
    visit += rnd.int(30, 365) * DAY;
  }
  const given = rnd.pick(sex === 'F' ? GIVEN_F : GIVEN_M);
  return {
    mrn: `MRN${String(n + 1).padStart(8, '0')}`,
    institution,
    family: rnd.pick(FAMILY),
    given,
    sex,
    birthDate: dicomDate(birth),
    conditions,
    studies,
  };
}

export function isOphthalmic(modality: Modality): boolean {
  return modality === 'OPT' || modality === 'OP' || modality === 'OPV';
}
