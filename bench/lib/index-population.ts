/**
 * The generated population of the QIDO/WADO benchmark, as pure functions of a study number k
 * (0, 1, 2, ...): which kind of study it is, whose it is, when it was made. The SQL of
 * index-loader.ts computes the same values in the database; the query picker uses these to
 * ask for patients, names and dates that exist at the scale being measured.
 *
 * Per block of 10 studies: one CT study of 64 instances and nine studies of 4 instances
 * (MR, or, for one study in 250, an ophthalmic OCT visit), i.e. 10 instances per study.
 * OCT visits belong to 10 patients; every other patient has 4 consecutive studies.
 */
import type { StudyKind } from './real-studies';

/** Shape of the population (see above). */
export const INSTANCES_PER_STUDY = 10;
export const OCT_PATIENTS = 10;
/** One study in OCT_EVERY is an OCT visit. */
export const OCT_EVERY = 250;
export const STUDIES_PER_PATIENT = 4;
/** Study dates are spread evenly over ten years from this day. */
export const FIRST_STUDY_DATE = '2016-01-01';
export const STUDY_DATE_DAYS = 3653;

/** Primes that scatter consecutive numbers over names and dates. */
export const SCATTER = { surname: 7919, given: 104729, date: 7919, birth: 7907 } as const;

/** Patient numbers of the OCT patients start here (far above the others). */
export const OCT_PATIENT_BASE = 100_000_000;

/** Kind of study number k. */
export function studyKind(k: number): StudyKind {
  if (k % 10 === 0) return 'ct';
  if (k % OCT_EVERY === 1) return 'oct';
  return 'mr';
}

/** Patient number of study k. */
export function patientNumber(k: number): number {
  return studyKind(k) === 'oct' ? OCT_PATIENT_BASE + (Math.floor(k / OCT_EVERY) % OCT_PATIENTS) : Math.floor(k / STUDIES_PER_PATIENT);
}

/** PatientID (0010,0020) of study k. */
export function patientIdOfStudy(k: number): string {
  const p = patientNumber(k);
  return p >= OCT_PATIENT_BASE ? `OCT-${String(p - OCT_PATIENT_BASE).padStart(2, '0')}` : `P${String(p).padStart(7, '0')}`;
}

const ONSETS = [
  'Ab', 'Al', 'An', 'Ar', 'Ba', 'Be', 'Bo', 'Ca', 'Co', 'Da', 'De', 'Do', 'El', 'Fa', 'Fe', 'Ga', 'Go', 'Ha', 'He', 'Ho', 'Ib', 'Ja',
  'Jo', 'Ka', 'Ke', 'Ko', 'La', 'Le', 'Lo', 'Ma', 'Me', 'Mo', 'Na', 'Ne', 'No', 'Ok', 'Pa', 'Pe', 'Ra', 'Re', 'Ro', 'Sa', 'Se', 'So',
  'Ta', 'Te', 'To', 'Va', 'Wa', 'Ya', 'Za',
];
const ENDINGS = ['bert', 'dini', 'fors', 'gaard', 'hara', 'kov', 'lund', 'mura', 'nez', 'quist', 'rano', 'sson', 'tti', 'wicz', 'yama', 'zadeh'];
const GIVEN = [
  'Aiko', 'Amara', 'Ana', 'Ben', 'Chen', 'Dara', 'Eli', 'Emil', 'Fatima', 'Femi', 'Greta', 'Hana', 'Ines', 'Ivan', 'Jonas', 'Kai', 'Lea',
  'Liam', 'Lina', 'Malik', 'Maria', 'Mei', 'Nadia', 'Noah', 'Omar', 'Paula', 'Priya', 'Rafael', 'Rosa', 'Sami', 'Sofia', 'Tariq',
  'Uma', 'Victor', 'Wen', 'Yara', 'Yusuf', 'Zoe',
];

/** 816 synthetic family names (onset + ending), none of them a real person's on purpose. */
export const SURNAMES: readonly string[] = ONSETS.flatMap((o) => ENDINGS.map((e) => o + e));
/** Given names, picked per patient like the family names. */
export const GIVEN_NAMES: readonly string[] = GIVEN;

/** Family name of patient number p. */
export function surnameOf(p: number): string {
  return SURNAMES[(p * SCATTER.surname) % SURNAMES.length]!;
}

/** Number of studies generated for `instances` instances (whole blocks of 10 studies). */
export function studiesFor(instances: number): number {
  return Math.max(10, Math.round(instances / INSTANCES_PER_STUDY / 10) * 10);
}
