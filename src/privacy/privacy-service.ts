/**
 * The privacy service (PrivacyService, privacy-types.ts) over the database, bound to the HMAC
 * key and the configured rules, plus the ingest hooks and the backfill the app wires in.
 */
import type { Knex } from 'knex';
import type { PrivacyConfig } from '../config';
import type { IndexChange } from '../db/instance-index';
import { findWithheldInstances, type WithholdRule } from './burned-in';
import { backfillDeidUids, recordChangedStudyUids, recordStudyUids, resolveDeidUids, type StudyLink } from './deid-uids';
import { readProjectOptions } from './deid-options';
import { assignDicomPatientKeys, assignFhirPatientKeys, assignKeysForStudies, type PatientKeyOptions } from './patient-keys';
import { loadPrivacyKey } from './privacy-key';
import type { PrivacyService } from './privacy-types';
import { createUidMapper } from './uid-map';

type Db = Knex | Knex.Transaction;

/** What a backfill did. */
export interface PrivacyBackfillReport {
  /** DICOM patients given a PatientKey. */
  patients: number;
  /** (project, study) links whose de-identified UIDs were recorded. */
  studies: number;
  /** deid_uids rows written. */
  rows: number;
}

/** The app's privacy service: the PrivacyService interface and what the app and routes need besides. */
export interface AppPrivacyService extends PrivacyService {
  /** Key assignment options (the HMAC key and offset range); never serialise them. */
  readonly patientKeyOptions: PatientKeyOptions;
  readonly withholdRule: WithholdRule;
  /**
   * Ingest hook (in the STOW transaction, after the FHIR sync): PatientKeys of the changed studies'
   * patients. `linkedUnkeyed`: the caller linked the keyed patients' FHIR Patients already, and this many patients have no key.
   */
  assignPatientKeysForChange(trx: Knex.Transaction, change: IndexChange, linkedUnkeyed?: number): Promise<void>;
  /** Ingest hook (in the STOW transaction, after the project links): de-identified UIDs of the changed studies (`links`: their project links, if read already). */
  recordDeidUidsForChange(trx: Knex.Transaction, change: IndexChange, links?: StudyLink[]): Promise<void>;
  /** Gives keys to patients without one and records UIDs of every unrecorded (project, study) link. */
  backfill(db: Knex): Promise<PrivacyBackfillReport>;
  onChange(listener: () => void): void;
  /** Tells the onChange listeners that researchers' views changed (called by the /privacy routes). */
  notifyChange(): void;
}

const BACKFILL_BATCH = 500;

/** Creates the privacy service; reads (or, on first start, creates) the key file. */
export function createPrivacyService(config: PrivacyConfig): AppPrivacyService {
  const key = loadPrivacyKey(config);
  const patientKeyOptions: PatientKeyOptions = { key, dateShiftMaxDays: config.dateShiftMaxDays };
  const withholdRule: WithholdRule = { withholdModalities: config.withholdModalities, withholdSopClassPrefixes: config.withholdSopClassPrefixes };
  const listeners = new Set<() => void>();
  return {
    onChange: (listener: () => void) => {
      listeners.add(listener);
    },
    notifyChange: () => {
      for (const listener of listeners) listener();
    },
    patientKeyOptions,
    withholdRule,
    pseudonymsForDicomPatients: (db: Db, pks: readonly number[]) => assignDicomPatientKeys(db, patientKeyOptions, pks),
    pseudonymsForFhirPatients: (db: Db, ids: readonly string[]) => assignFhirPatientKeys(db, patientKeyOptions, ids),
    projectOptions: (db: Db, projectIds: readonly string[]) => readProjectOptions(db, projectIds),
    uidMapper: (projectId: string) => createUidMapper(key, projectId),
    resolveDeidUids: (db: Db, projectIds: readonly string[], deidUids: readonly string[]) => resolveDeidUids(db, key, projectIds, deidUids),
    recordStudyUids: async (db: Db, studyPks: readonly number[], projectIds?: readonly string[]) => {
      await recordStudyUids(db, key, studyPks, projectIds);
    },
    withheldInstances: (db: Db, uids: readonly string[]) => findWithheldInstances(db, withholdRule, uids),
    assignPatientKeysForChange: (trx, change, linkedUnkeyed) => assignKeysForStudies(trx, patientKeyOptions, change.studyPks, linkedUnkeyed),
    recordDeidUidsForChange: (trx, change, links) => recordChangedStudyUids(trx, key, change.studyPks, links),
    async backfill(db: Knex) {
      let patients = 0;
      let after = 0;
      for (;;) {
        const pks = (await db('patients').whereNull('patient_key_id').where('id', '>', after).orderBy('id').limit(BACKFILL_BATCH).pluck('id')) as Array<string | number>;
        if (pks.length === 0) break;
        await assignDicomPatientKeys(db, patientKeyOptions, pks.map(Number));
        patients += pks.length;
        after = Number(pks[pks.length - 1]);
      }
      const uids = await backfillDeidUids(db, key);
      return { patients, ...uids };
    },
  };
}
