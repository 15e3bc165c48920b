import type { Knex } from 'knex';
import type { ScannedInstance } from '../dicom/types';
import { jsonWithoutNul, pickSeriesAttributes, pickStudyAttributes } from './level-attributes';
import { queryPrepared } from './prepared-statement';
import { intOrNull, normalizePersonName, textOrNull, toSqlDate } from './normalize';

/**
 * The patient, study and series rows of an instance being indexed (src/db/instance-index.ts):
 * one statement upserts the levels a transaction has not written yet, and locks them.
 */

/** The key that makes two instances the same patient: issuer + PatientID (per study when PatientID is absent). */
export function patientIdentity(scanned: ScannedInstance): string {
  const a = scanned.attributes;
  const pid = textOrNull(a.patientID);
  if (!pid) return `study|${a.studyInstanceUID}`;
  return `${textOrNull(a.issuerOfPatientID) ?? ''}|${pid}`;
}

/**
 * Upserts the patient, study and series of an instance (those not already written in this
 * transaction) in one statement: each level's INSERT ... ON CONFLICT is a WITH query that the
 * next one reads its parent key from. The study row stays locked until the transaction ends,
 * which is what serialises concurrent requests into one study. The statement text is built once
 * per shape (which parent keys are known), not per request.
 */
export async function upsertLevels(
  trx: Knex.Transaction,
  scanned: ScannedInstance,
  identity: string,
  known: { patientPk?: number; studyPk?: number },
  leading?: { sql: string; values: unknown[] },
): Promise<{ patientPk: number; studyPk: number; seriesPk: number }> {
  const patientPk = known.patientPk;
  const studyPk = known.studyPk;
  const knowsPatient = patientPk !== undefined;
  const knowsStudy = studyPk !== undefined;
  // The leading INSERT rides in the patient upsert (the first level); without one, it goes alone first.
  if (leading && knowsPatient) await queryPrepared(trx, leading.sql, leading.values);
  const lead = leading && !knowsPatient ? leading : undefined;
  const { patientValues, studyValues, seriesValues, knownKeys, conditional } = levelBindings(scanned, identity, known, lead?.values);
  let row = (await queryPrepared(trx, levelsStatement(knowsPatient, knowsStudy, true, lead?.sql), conditional))[0]!;
  if (row.patient_pk === null || row.study_pk === null || row.series_pk === null) {
    // A concurrent request committed an identical row after this statement's snapshot was taken:
    // locked, but neither returned nor visible. The plain upsert returns it (rare). The leading
    // INSERT ran in the statement above.
    row = (await queryPrepared(trx, levelsStatement(knowsPatient, knowsStudy, false), [...patientValues, ...studyValues, ...seriesValues, ...knownKeys]))[0]!;
  }
  return { patientPk: Number(row.patient_pk), studyPk: Number(row.study_pk), seriesPk: Number(row.series_pk) };
}

/** The bindings of the levels statement (levelsStatement) in placeholder order, by level, and of its conditional form. */
function levelBindings(scanned: ScannedInstance, identity: string, known: { patientPk?: number; studyPk?: number }, leadValues?: unknown[]) {
  const a = scanned.attributes;
  const patientPk = known.patientPk;
  const studyPk = known.studyPk;
  const knowsPatient = patientPk !== undefined;
  const knowsStudy = studyPk !== undefined;
  // Bindings in the order of the placeholders in the text (see levelsStatement()), by level.
  const patientValues: Knex.RawBinding[] = [];
  const studyValues: Knex.RawBinding[] = [];
  // A data-modifying WITH query runs even when nothing reads it (a second patient in a known study).
  if (!knowsPatient) {
    patientValues.push(identity, textOrNull(a.patientID), textOrNull(a.issuerOfPatientID), textOrNull(a.patientName), toSqlDate(a.patientBirthDate), textOrNull(a.patientSex));
  }
  if (!knowsStudy) {
    studyValues.push(a.studyInstanceUID);
    if (patientPk !== undefined) studyValues.push(patientPk);
    studyValues.push(
      textOrNull(a.patientID),
      textOrNull(a.issuerOfPatientID),
      textOrNull(a.patientName),
      normalizePersonName(a.patientName),
      toSqlDate(a.patientBirthDate),
      textOrNull(a.patientSex),
      toSqlDate(a.studyDate),
      textOrNull(a.studyTime),
      textOrNull(a.accessionNumber),
      textOrNull(a.studyID),
      textOrNull(a.studyDescription),
      textOrNull(a.referringPhysicianName),
      textOrNull(a.institutionName),
      jsonWithoutNul(pickStudyAttributes(scanned.dataset)),
    );
  }
  const seriesValues: Knex.RawBinding[] = [a.seriesInstanceUID];
  if (studyPk !== undefined) seriesValues.push(studyPk);
  seriesValues.push(
    textOrNull(a.modality),
    intOrNull(a.seriesNumber),
    textOrNull(a.seriesDescription),
    toSqlDate(a.seriesDate),
    textOrNull(a.seriesTime),
    textOrNull(a.bodyPartExamined),
    textOrNull(a.laterality),
    textOrNull(a.manufacturer),
    textOrNull(a.manufacturerModelName),
    textOrNull(a.stationName),
    a.acquisitionDeviceTypeCodes.map((c) => c.replace(/\u0000/g, '')),
    toSqlDate(a.performedProcedureStepStartDate),
    textOrNull(a.performedProcedureStepStartTime),
    jsonWithoutNul(pickSeriesAttributes(scanned.dataset)),
  );
  const knownKeys = [...(knowsPatient ? [patientPk] : []), ...(knowsStudy ? [studyPk] : [])];
  // Usually every level exists with the same attributes (the next instance of a series): the
  // conditional statement then only locks the rows (no new row versions, no index entries, no
  // trigger). It takes each upserted level's unique key after the level's values, to look the row up.
  const conditional = [
    ...((leadValues ?? []) as Knex.RawBinding[]),
    ...patientValues,
    ...(knowsPatient ? [] : [identity]),
    ...studyValues,
    ...(knowsStudy ? [] : [a.studyInstanceUID]),
    ...seriesValues,
    ...knownKeys,
    a.seriesInstanceUID,
  ];
  return { patientValues, studyValues, seriesValues, knownKeys, conditional };
}

/**
 * The conditional levels upsert of an instance whose levels the transaction has not written yet,
 * as WITH queries for a caller's own statement (`levels` gives patient_pk, study_pk, series_pk;
 * a key is NULL as in upsertLevels, when the caller must take the plain path), `lead` first.
 */
export function levelsWithQueries(scanned: ScannedInstance, identity: string, lead?: { sql: string; values: unknown[] }): { ctes: string; values: Knex.RawBinding[] } {
  const sql = levelsStatement(false, false, true, lead?.sql);
  const at = sql.lastIndexOf('\nSELECT ');
  return {
    ctes: `${sql.slice('WITH '.length, at)},\nlevels AS (${sql.slice(at + 1)})`,
    values: levelBindings(scanned, identity, {}, lead?.values).conditional,
  };
}

const PATIENT_COLUMNS = ['identity_key', 'patient_id', 'issuer_of_patient_id', 'patient_name', 'birth_date', 'sex'];
/** What an existing patient row gets: known values replace, absent ones keep what the row has. */
const PATIENT_SET = ['patient_name', 'birth_date', 'sex'].map((c) => [c, `coalesce(excluded.${c}, patients.${c})`] as const);

/** With `lead`, the row comes from that WITH query's one row, so that its INSERT runs first (before this one can wait for a row lock). */
function patientUpsert(conditional: boolean, lead: boolean): string {
  const placeholders = PATIENT_COLUMNS.map(() => '?').join(', ');
  return `INSERT INTO patients (${PATIENT_COLUMNS.join(', ')})
  ${lead ? `SELECT ${placeholders} FROM lead` : `VALUES (${placeholders})`}
  ON CONFLICT (identity_key) DO UPDATE SET ${PATIENT_SET.map(([c, v]) => `${c} = ${v}`).join(', ')}, updated_at = CURRENT_TIMESTAMP${
    conditional ? `\n  WHERE ${distinct(PATIENT_SET.map(([c]) => `patients.${c}`), PATIENT_SET.map(([, v]) => v))}` : ''
  }
  RETURNING id`;
}

/** `(a, b) IS DISTINCT FROM (x, y)` (a one-column row is written without the brackets). */
function distinct(left: string[], right: string[]): string {
  return left.length === 1 ? `${left[0]} IS DISTINCT FROM ${right[0]}` : `(${left.join(', ')}) IS DISTINCT FROM (${right.join(', ')})`;
}

/** Study columns after study_uid, in binding order; an upsert rewrites them all. Its updated_at is set by the aggregates update that always follows. */
const STUDY_COLUMNS = [
  'patient_pk',
  'patient_id',
  'issuer_of_patient_id',
  'patient_name',
  'patient_name_norm',
  'patient_birth_date',
  'patient_sex',
  'study_date',
  'study_time',
  'accession_number',
  'study_id',
  'study_description',
  'referring_physician_name',
  'institution_name',
  'dataset',
];

/** Series columns after series_uid, in binding order (study_pk first); updated_at as for studies. */
const SERIES_COLUMNS = [
  'study_pk',
  'modality',
  'series_number',
  'series_description',
  'series_date',
  'series_time',
  'body_part_examined',
  'laterality',
  'manufacturer',
  'manufacturer_model_name',
  'station_name',
  'device_type_codes',
  'pps_start_date',
  'pps_start_time',
  'dataset',
];

/**
 * The upsert of a study or series row under its parent (`parentRef`). The conditional form
 * (see levelsStatement) inserts only when the parent key is known, and updates only a row that
 * differs: ON CONFLICT DO UPDATE locks the conflicting row whether or not its WHERE holds
 * (PostgreSQL INSERT, "ON CONFLICT Clause").
 */
function levelUpsert(table: string, uidColumn: string, columns: string[], parentRef: string, conditional: boolean): string {
  const values = columns.map((_column, i) => (i === 0 ? parentRef : '?'));
  // A bound parent key is never NULL; a looked-up one may be (and is not bound twice).
  const guarded = conditional && !parentRef.startsWith('?');
  const source = guarded ? `SELECT ?, ${values.join(', ')} WHERE ${parentRef} IS NOT NULL` : `VALUES (?, ${values.join(', ')})`;
  const when = conditional ? `\n  WHERE ${distinct(columns.map((c) => `${table}.${c}`), columns.map((c) => `excluded.${c}`))}` : '';
  return `INSERT INTO ${table} (${uidColumn}, ${columns.join(', ')}) ${source}
  ON CONFLICT (${uidColumn}) DO UPDATE SET ${columns.map((c) => `${c} = excluded.${c}`).join(', ')}${when}
  RETURNING id`;
}

const levelStatements = new Map<string, string>();

/**
 * The levels statement for one shape: `?` placeholders in the order upsertLevels() binds them
 * (withLookups() for the conditional form). The conditional form leaves unchanged rows as they
 * are and reads their key from the statement's snapshot; a level whose parent key it could not
 * find (a row committed by another transaction after the snapshot) is skipped and its key comes
 * back NULL, for the caller to run the plain form.
 */
function levelsStatement(knowsPatient: boolean, knowsStudy: boolean, conditional: boolean, leadSql?: string): string {
  const shape = `${knowsPatient}|${knowsStudy}|${conditional}|${leadSql ?? ''}`;
  let sql = levelStatements.get(shape);
  if (sql === undefined) {
    const ctes: string[] = [];
    // A leading INSERT (upsertLevels) comes first, its bindings too; only with the patient level.
    if (leadSql !== undefined && !knowsPatient) ctes.push(`lead AS (${leadSql})`);
    const key = (cte: string, table: string, uidColumn: string) =>
      conditional ? `coalesce((SELECT id FROM ${cte}), (SELECT id FROM ${table} WHERE ${uidColumn} = ?))` : `(SELECT id FROM ${cte})`;
    let patientRef = '?::bigint';
    let studyRef = '?::bigint';
    if (!knowsPatient) {
      ctes.push(`p AS (${patientUpsert(conditional, leadSql !== undefined)})`);
      ctes.push(`pk AS (SELECT ${key('p', 'patients', 'identity_key')} AS id)`);
      patientRef = '(SELECT id FROM pk)';
    }
    if (!knowsStudy) {
      ctes.push(`st AS (${levelUpsert('studies', 'study_uid', STUDY_COLUMNS, knowsPatient ? '?::bigint' : patientRef, conditional)})`);
      ctes.push(`sk AS (SELECT ${key('st', 'studies', 'study_uid')} AS id)`);
      studyRef = '(SELECT id FROM sk)';
    }
    ctes.push(`se AS (${levelUpsert('series', 'series_uid', SERIES_COLUMNS, knowsStudy ? '?::bigint' : studyRef, conditional)})`);
    sql = `WITH ${ctes.join(',\n')}
SELECT ${patientRef} AS patient_pk,
       ${studyRef} AS study_pk,
       ${key('se', 'series', 'series_uid')} AS series_pk`;
    levelStatements.set(shape, sql);
  }
  return sql;
}
