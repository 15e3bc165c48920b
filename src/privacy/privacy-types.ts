/**
 * The privacy layer's shared vocabulary: what a researcher-facing view needs to know about a
 * patient (its pseudonym and date offset), the de-identification options a project selects
 * (PS3.15 Annex E, Table E.1-1 option columns), and the service that answers both from the
 * database. DICOM (src/dicom/deidentify*), DICOMweb and FHIR views code against these types.
 */
import type { Knex } from 'knex';

/** The PS3.15 E.3 options a project selects for its researchers (stored per project). */
export interface DeidOptions {
  /** E.3.6 Retain Longitudinal Temporal Information with Modified Dates: dates shifted by the patient's offset. */
  retainLongitudinalModifiedDates: boolean;
  /** E.3.4 Retain Patient Characteristics (sex, age, size, weight, ...). */
  retainPatientCharacteristics: boolean;
  /** E.3.5 Retain Device Identity (device serial number, station name, ...). */
  retainDeviceIdentity: boolean;
  /** E.3.10 Retain Safe Private: private attributes known safe are kept. */
  retainSafePrivate: boolean;
  /** E.3.11 Clean Descriptors: descriptions kept after cleaning instead of removed. */
  cleanDescriptors: boolean;
}

/** What a project gets unless it selects otherwise: shifted dates, nothing else retained. */
export const DEFAULT_DEID_OPTIONS: Readonly<DeidOptions> = Object.freeze({
  retainLongitudinalModifiedDates: true,
  retainPatientCharacteristics: false,
  retainDeviceIdentity: false,
  retainSafePrivate: false,
  cleanDescriptors: false,
});

/** A patient as a researcher knows it: the random pseudonym and the stable, non-zero date offset. */
export interface PatientPseudonym {
  /** Random, never derived from the MRN (HIPAA 164.514(c)). Shown as PatientID/PatientName and Patient.identifier. */
  patientKey: string;
  /** Days added to every date of this patient a researcher sees; never 0. */
  dateOffsetDays: number;
}

/** Everything needed to de-identify one record for one project. */
export interface DeidContext {
  projectId: string;
  options: DeidOptions;
  patient: PatientPseudonym;
  /** `2.25.` + 128 bits of HMAC(key, project | uid): stable per project, different across projects. */
  mapUid: (uid: string) => string;
}

/** A de-identified UID resolved back to the original, within the projects a token holds. */
export interface ResolvedUid {
  uid: string;
  projectId: string;
}

/**
 * The database side of privacy (implemented in src/privacy/privacy-service.ts). All reads take
 * the knex (or transaction) to run on, so callers can use them inside their own transaction.
 */
export interface PrivacyService {
  /** The pseudonym of DICOM index patients (patients.id), assigning one at first sight. */
  pseudonymsForDicomPatients(db: Knex | Knex.Transaction, patientPks: readonly number[]): Promise<Map<number, PatientPseudonym>>;
  /** The pseudonym of FHIR Patient resources (by id), assigning one at first sight. */
  pseudonymsForFhirPatients(db: Knex | Knex.Transaction, patientIds: readonly string[]): Promise<Map<string, PatientPseudonym>>;
  /** Each project's de-identification options (DEFAULT_DEID_OPTIONS where none were selected). */
  projectOptions(db: Knex | Knex.Transaction, projectIds: readonly string[]): Promise<Map<string, DeidOptions>>;
  /** The UID mapper of a project (pure; no database). */
  uidMapper(projectId: string): (uid: string) => string;
  /** Original UIDs of de-identified ones, searched within `projectIds` (the token's projects). */
  resolveDeidUids(db: Knex | Knex.Transaction, projectIds: readonly string[], deidUids: readonly string[]): Promise<Map<string, ResolvedUid>>;
  /** Records the de-identified UIDs of studies (study, series, instance UIDs) for the projects holding them. */
  recordStudyUids(db: Knex | Knex.Transaction, studyPks: readonly number[], projectIds?: readonly string[]): Promise<void>;
  /** SOP Instance UIDs (of those given) withheld from researchers for possible burned-in annotation and not cleared. */
  withheldInstances(db: Knex | Knex.Transaction, sopInstanceUids: readonly string[]): Promise<Set<string>>;
  /**
   * Calls `listener` after this process changed what researchers may see (a burned-in clearance
   * given or withdrawn, a project's options), so views can drop what they cached at once.
   */
  onChange?(listener: () => void): void;
}
