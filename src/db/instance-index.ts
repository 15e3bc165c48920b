import type { Knex } from 'knex';
import type { ScannedInstance } from '../dicom/types';
import { withTransaction } from './database';
import { jsonWithoutNul, pickSeriesAttributes, pickStudyAttributes } from './level-attributes';
import { keyedStatement, preparedRaw, singleKeys } from './prepared-statement';
import { intOrNull, normalizePersonName, textOrNull, toSqlDate } from './normalize';

/** One instance whose bytes are durable in the blob store, ready to be indexed. */
export interface InstanceToIndex {
  scanned: ScannedInstance;
  blobKey: string;
  size: number;
  /** Position in the request: a later part with the same SOP Instance UID wins. */
  order: number;
}

/** What an index change touched, for work that must happen in the same transaction (FHIR views, projects, audit). */
export interface IndexChange {
  /** Studies that still exist and changed. */
  studyPks: number[];
  /** Studies emptied and removed from the index, with the FHIR ImagingStudy id they had. */
  removedStudies: Array<{ id: number; fhirId: string | null }>;
  /** The row the caller's AlongsideQuery read, when the insert statement ran it. */
  alongside?: Record<string, unknown>;
}

/**
 * Work of the index-change hook that can share the instance insert's statement (one round trip
 * less), for a change of one study: WITH queries (`ctes`, starting with a comma) and a SELECT
 * over them (`select`), whose `?` placeholders take `bindings(studyPk)` in text order. They must
 * not write the studies, series or instances rows (the statement writes those). The insert then
 * also gives a study without a FHIR id its id. Its row comes back in IndexChange.alongside.
 */
export interface AlongsideQuery {
  ctes: string;
  select: string;
  bindings(studyPk: number): Knex.RawBinding[];
}

/** Called inside the index transaction after rows and aggregates are written; a throw rolls everything back. */
export type OnIndexChange = (trx: Knex.Transaction, change: IndexChange) => Promise<void>;

export type IndexOutcome =
  | { status: 'created' }
  | { status: 'unchanged' }
  | { status: 'replaced'; previousVersion: number; version: number };

/**
 * Writes patients, studies, series and instances for a batch in ONE transaction, then
 * recomputes the aggregates of every study and series it touched, so they are exact when
 * the STOW response is sent. Rows are locked in a fixed order (studies and series by UID, then
 * instances by UID) so concurrent requests over the same studies cannot deadlock each other.
 * Instances new to the index go in one multi-row statement; re-sent and replaced ones take the
 * row-by-row path.
 */
export async function indexInstances(knex: Knex, items: InstanceToIndex[], onChange?: OnIndexChange, alongside?: AlongsideQuery): Promise<IndexOutcome[]> {
  const order = items
    .map((item, i) => ({ item, i }))
    .sort((a, b) => compareKeys(a.item, b.item) || a.item.order - b.item.order);
  const perUid = new Map<string, number>();
  for (const { item } of order) perUid.set(item.scanned.attributes.sopInstanceUID, (perUid.get(item.scanned.attributes.sopInstanceUID) ?? 0) + 1);
  return withTransaction(knex, async (trx) => {
    const outcomes: IndexOutcome[] = new Array(items.length);
    const patientPks = new Map<string, number>();
    const studyPks = new Map<string, number>();
    const seriesPks = new Map<string, number>();
    const touchedStudies = new Set<number>();
    const touchedSeries = new Set<number>();
    const placed: Array<{ item: InstanceToIndex; i: number; studyPk: number; seriesPk: number }> = [];
    for (const { item, i } of order) {
      const a = item.scanned.attributes;
      const identity = patientIdentity(item.scanned);
      let patientPk = patientPks.get(identity);
      let studyPk = studyPks.get(a.studyInstanceUID);
      let seriesPk = seriesPks.get(a.seriesInstanceUID);
      if (seriesPk === undefined) {
        // The levels not written yet in this transaction, in one statement (patient, study, series).
        const pks = await upsertLevels(trx, item.scanned, identity, { patientPk, studyPk });
        patientPk = pks.patientPk;
        studyPk = pks.studyPk;
        seriesPk = pks.seriesPk;
        patientPks.set(identity, patientPk);
        studyPks.set(a.studyInstanceUID, studyPk);
        seriesPks.set(a.seriesInstanceUID, seriesPk);
      }
      studyPk = studyPk!;
      touchedStudies.add(studyPk);
      touchedSeries.add(seriesPk);
      placed.push({ item, i, studyPk, seriesPk });
    }
    // UIDs that occur once in the request are inserted together; those the index already holds
    // are skipped by the insert (not locked: the row-by-row path locks them in UID order).
    // A concurrent request inserting one of them makes ours wait for its end, then skip it.
    const single = placed.filter((p) => perUid.get(p.item.scanned.attributes.sopInstanceUID) === 1);
    // The same statement brings the counts of every touched level up to date (exact: they
    // add the rows it inserted to those already there, under the study locks held).
    const along = onChange ? alongside : undefined;
    const { uids: inserted, alongsideRow } = await insertInstances(trx, single, [...touchedSeries], [...touchedStudies], along);
    for (const p of single) if (inserted?.has(p.item.scanned.attributes.sopInstanceUID)) outcomes[p.i] = { status: 'created' };
    // The rest one by one, by UID and then by position in the request, so a later part with
    // the same SOP Instance UID wins even when it names another series.
    const rest = placed.filter((p) => !outcomes[p.i]).sort((x, y) => cmp(x.item.scanned.attributes.sopInstanceUID, y.item.scanned.attributes.sopInstanceUID) || x.item.order - y.item.order);
    let moved = false;
    for (const p of rest) {
      const result = await upsertInstance(trx, p.studyPk, p.seriesPk, p.item);
      if (result.movedFrom) {
        moved = true;
        touchedStudies.add(result.movedFrom.studyPk);
        touchedSeries.add(result.movedFrom.seriesPk);
      }
      outcomes[p.i] = result.outcome;
    }
    // Only an instance moving to another series or study can empty a level. When every instance
    // was new, the insert already refreshed the aggregates.
    const removedStudies = inserted && rest.length === 0 ? [] : await refreshAggregates(trx, [...touchedSeries], [...touchedStudies], { mayEmpty: moved });
    if (onChange) {
      const removed = new Set(removedStudies.map((r) => r.id));
      await onChange(trx, { studyPks: [...touchedStudies].filter((pk) => !removed.has(pk)), removedStudies, alongside: alongsideRow });
    }
    return outcomes;
  });
}

/** Columns of an instance row and their SQL types, for the multi-row insert from one JSON parameter. */
const INSTANCE_COLUMNS: Array<[string, string]> = (
  'sop_instance_uid text, series_pk bigint, study_pk bigint, sop_class_uid text, instance_number integer, ' +
  'image_laterality text, frame_lateralities text[], number_of_frames integer, rows integer, columns integer, ' +
  'bits_allocated integer, bits_stored integer, samples_per_pixel integer, photometric_interpretation text, ' +
  'content_date date, content_time text, acquisition_datetime text, transfer_syntax_uid text, ' +
  'specific_character_set text, blob_key text, size bigint, has_file_meta boolean, header_length bigint, ' +
  'pixel_data_offset bigint, frames jsonb, dataset jsonb'
)
  .split(', ')
  .map((c) => c.split(' ') as [string, string]);
const INSTANCE_NAMES = INSTANCE_COLUMNS.map(([n]) => `"${n}"`).join(', ');
const INSTANCE_DEFS = INSTANCE_COLUMNS.map(([n, t]) => `"${n}" ${t}`).join(', ');

/**
 * Inserts the instance rows whose UID the index does not hold yet, in one statement: the rows
 * travel as one JSON text that PostgreSQL unpacks (json_to_recordset), instead of one INSERT
 * (and round trip) each. The same statement refreshes the aggregates of the given series and
 * studies by adding the inserted rows to the counts and SOP classes the rows hold: those are
 * exact (every writer keeps them so, and a recount follows any other change), and the rows are
 * locked since upsertLevels(), so no other writer can have changed them. Recounting instead
 * would read every instance of the series and study on each STOW (O(n) per request).
 * Returns the UIDs inserted, or null when there was nothing to insert (and the aggregates were
 * not touched).
 */
async function insertInstances(
  trx: Knex.Transaction,
  rows: Array<{ item: InstanceToIndex; studyPk: number; seriesPk: number }>,
  seriesPks: number[],
  studyPks: number[],
  alongside?: AlongsideQuery,
): Promise<{ uids: Set<string> | null; alongsideRow?: Record<string, unknown> }> {
  if (rows.length === 0) return { uids: null };
  const payload = rows.map((r) => instanceRow(r.item, r.studyPk, r.seriesPk, false));
  const json = jsonWithoutNul(payload);
  if (!singleKeys(seriesPks, studyPks)) {
    const result = await preparedRaw(trx, INSERT_AND_COUNT.many, [json, seriesPks, studyPks]);
    return { uids: new Set((result.rows as Array<{ sop_instance_uid: string }>).map((r) => r.sop_instance_uid)) };
  }
  if (!alongside) {
    const result = await preparedRaw(trx, INSERT_AND_COUNT.one, [json, seriesPks[0], studyPks[0]]);
    return { uids: new Set((result.rows as Array<{ sop_instance_uid: string }>).map((r) => r.sop_instance_uid)) };
  }
  const row = (await preparedRaw(trx, insertAlongside(alongside), [json, seriesPks[0], studyPks[0], ...alongside.bindings(studyPks[0])])).rows[0] as Record<string, unknown>;
  const { inserted_uids: uids, ...rest } = row;
  const list = (typeof uids === 'string' ? JSON.parse(uids) : uids) as string[];
  return { uids: new Set(list), alongsideRow: rest };
}

const alongsideStatements = new WeakMap<AlongsideQuery, string>();

/** INSERT_AND_COUNT for one series and study with the hook's work alongside, and the study named for FHIR. */
function insertAlongside(alongside: AlongsideQuery): string {
  let sql = alongsideStatements.get(alongside);
  if (sql === undefined) {
    sql = `${insertAndCountCtes(true).replaceAll('{keys}', '= ?::bigint')}${alongside.ctes}
SELECT (SELECT coalesce(json_agg(sop_instance_uid), '[]') FROM ins) AS inserted_uids, a.*
FROM (SELECT 1) one LEFT JOIN LATERAL (${alongside.select}) a ON true`;
    alongsideStatements.set(alongside, sql);
  }
  return sql;
}

/** The WITH queries of the insert statement; `named` also gives a study without a FHIR id its id (see AlongsideQuery). */
function insertAndCountCtes(named: boolean): string {
  return `WITH ins AS (
    INSERT INTO instances (${INSTANCE_NAMES}) SELECT ${INSTANCE_NAMES} FROM json_to_recordset(?::json) AS x(${INSTANCE_DEFS})
    ON CONFLICT (sop_instance_uid) DO NOTHING
    RETURNING sop_instance_uid, series_pk, study_pk, sop_class_uid),
  counted AS (
    UPDATE series s SET
      num_instances = s.num_instances + (SELECT count(*) FROM ins WHERE ins.series_pk = s.id),
      updated_at = now()
    WHERE s.id {keys}
    RETURNING s.id),
  studied AS (
    UPDATE studies st SET
      num_series = (SELECT count(*) FROM series se WHERE se.study_pk = st.id),
      num_instances = st.num_instances + (SELECT count(*) FROM ins WHERE ins.study_pk = st.id),
      modalities = coalesce((SELECT array_agg(DISTINCT se.modality ORDER BY se.modality) FROM series se
                              WHERE se.study_pk = st.id AND se.modality IS NOT NULL), '{}'),
      sop_classes = coalesce((SELECT array_agg(DISTINCT u.c ORDER BY u.c) FROM (
                                SELECT unnest(st.sop_classes) AS c
                                UNION ALL SELECT ins.sop_class_uid FROM ins WHERE ins.study_pk = st.id) u), '{}'),${named ? '\n      fhir_id = coalesce(st.fhir_id, gen_random_uuid()::text),' : ''}
      updated_at = now()
    WHERE st.id {keys}
    RETURNING st.id)`;
}

const INSERT_AND_COUNT = keyedStatement(`${insertAndCountCtes(false)}
SELECT sop_instance_uid FROM ins`);

function compareKeys(a: InstanceToIndex, b: InstanceToIndex): number {
  const x = a.scanned.attributes;
  const y = b.scanned.attributes;
  return (
    cmp(x.studyInstanceUID, y.studyInstanceUID) ||
    cmp(x.seriesInstanceUID, y.seriesInstanceUID) ||
    cmp(x.sopInstanceUID, y.sopInstanceUID)
  );
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

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
async function upsertLevels(
  trx: Knex.Transaction,
  scanned: ScannedInstance,
  identity: string,
  known: { patientPk?: number; studyPk?: number },
): Promise<{ patientPk: number; studyPk: number; seriesPk: number }> {
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
    ...patientValues,
    ...(knowsPatient ? [] : [identity]),
    ...studyValues,
    ...(knowsStudy ? [] : [a.studyInstanceUID]),
    ...seriesValues,
    ...knownKeys,
    a.seriesInstanceUID,
  ];
  let row = (await preparedRaw(trx, levelsStatement(knowsPatient, knowsStudy, true), conditional)).rows[0];
  if (row.patient_pk === null || row.study_pk === null || row.series_pk === null) {
    // A concurrent request committed an identical row after this statement's snapshot was taken:
    // locked, but neither returned nor visible. The plain upsert returns it (rare).
    row = (await preparedRaw(trx, levelsStatement(knowsPatient, knowsStudy, false), [...patientValues, ...studyValues, ...seriesValues, ...knownKeys])).rows[0];
  }
  return { patientPk: Number(row.patient_pk), studyPk: Number(row.study_pk), seriesPk: Number(row.series_pk) };
}

const PATIENT_COLUMNS = ['identity_key', 'patient_id', 'issuer_of_patient_id', 'patient_name', 'birth_date', 'sex'];
/** What an existing patient row gets: known values replace, absent ones keep what the row has. */
const PATIENT_SET = ['patient_name', 'birth_date', 'sex'].map((c) => [c, `coalesce(excluded.${c}, patients.${c})`] as const);

function patientUpsert(conditional: boolean): string {
  return `INSERT INTO patients (${PATIENT_COLUMNS.join(', ')})
  VALUES (${PATIENT_COLUMNS.map(() => '?').join(', ')})
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
function levelsStatement(knowsPatient: boolean, knowsStudy: boolean, conditional: boolean): string {
  const shape = `${knowsPatient}|${knowsStudy}|${conditional}`;
  let sql = levelStatements.get(shape);
  if (sql === undefined) {
    const ctes: string[] = [];
    const key = (cte: string, table: string, uidColumn: string) =>
      conditional ? `coalesce((SELECT id FROM ${cte}), (SELECT id FROM ${table} WHERE ${uidColumn} = ?))` : `(SELECT id FROM ${cte})`;
    let patientRef = '?::bigint';
    let studyRef = '?::bigint';
    if (!knowsPatient) {
      ctes.push(`p AS (${patientUpsert(conditional)})`);
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

interface InstanceWrite {
  outcome: IndexOutcome;
  movedFrom?: { studyPk: number; seriesPk: number };
}

/** The instances row of an item; JSON columns as text (knex insert/update) or as values (JSON payload). */
function instanceRow(item: InstanceToIndex, studyPk: number, seriesPk: number, jsonAsText: boolean): Record<string, unknown> {
  const s = item.scanned;
  const a = s.attributes;
  return {
    sop_instance_uid: a.sopInstanceUID,
    series_pk: seriesPk,
    study_pk: studyPk,
    sop_class_uid: a.sopClassUID,
    instance_number: intOrNull(a.instanceNumber),
    image_laterality: textOrNull(a.imageLaterality),
    frame_lateralities: a.frameLateralities.map((v) => v.replace(/\u0000/g, '')),
    number_of_frames: intOrNull(a.numberOfFrames),
    rows: intOrNull(a.rows),
    columns: intOrNull(a.columns),
    bits_allocated: intOrNull(a.bitsAllocated),
    bits_stored: intOrNull(a.bitsStored),
    samples_per_pixel: intOrNull(a.samplesPerPixel),
    photometric_interpretation: textOrNull(a.photometricInterpretation),
    content_date: toSqlDate(a.contentDate),
    content_time: textOrNull(a.contentTime),
    acquisition_datetime: textOrNull(a.acquisitionDateTime),
    transfer_syntax_uid: a.transferSyntaxUID,
    specific_character_set: textOrNull(a.specificCharacterSet),
    blob_key: item.blobKey,
    size: item.size,
    has_file_meta: s.hasFileMeta,
    header_length: s.headerLength,
    pixel_data_offset: s.pixelDataOffset,
    frames: jsonAsText ? JSON.stringify(s.frames) : s.frames,
    dataset: jsonAsText ? jsonWithoutNul(s.dataset) : s.dataset,
  };
}

async function upsertInstance(
  trx: Knex.Transaction,
  studyPk: number,
  seriesPk: number,
  item: InstanceToIndex,
): Promise<InstanceWrite> {
  const a = item.scanned.attributes;
  const row = instanceRow(item, studyPk, seriesPk, true);
  const existing = await trx('instances')
    .where({ sop_instance_uid: a.sopInstanceUID })
    .forUpdate()
    .first('id', 'blob_key', 'size', 'version', 'series_pk', 'study_pk', 'created_at', 'updated_at');
  if (!existing) {
    // A concurrent request may insert the same UID between our read and write; the unique
    // index then fails this transaction and withTransaction() retries it as an update.
    await trx('instances').insert(row);
    return { outcome: { status: 'created' } };
  }
  if (existing.blob_key === item.blobKey) {
    return { outcome: { status: 'unchanged' } };
  }
  const [place] = await trx('series as se')
    .join('studies as st', 'st.id', 'se.study_pk')
    .where('se.id', existing.series_pk)
    .select('se.series_uid', 'st.study_uid');
  await trx('instance_versions').insert({
    sop_instance_uid: a.sopInstanceUID,
    version: existing.version,
    study_uid: place.study_uid,
    series_uid: place.series_uid,
    blob_key: existing.blob_key,
    size: existing.size,
    stored_at: existing.updated_at ?? existing.created_at,
  });
  const version = Number(existing.version) + 1;
  await trx('instances')
    .where({ id: existing.id })
    .update({ ...row, version, updated_at: trx.fn.now() });
  const moved =
    Number(existing.series_pk) !== seriesPk
      ? { studyPk: Number(existing.study_pk), seriesPk: Number(existing.series_pk) }
      : undefined;
  return { outcome: { status: 'replaced', previousVersion: Number(existing.version), version }, movedFrom: moved };
}

/**
 * Recomputes counts and lists from the rows themselves (exact by construction), dropping emptied
 * levels (skipped when the caller knows no level can be empty: only instances were added);
 * returns the studies it removed.
 */
export async function refreshAggregates(
  trx: Knex.Transaction,
  seriesPks: number[],
  studyPks: number[],
  options: { mayEmpty?: boolean } = {},
): Promise<Array<{ id: number; fhirId: string | null }>> {
  if (options.mayEmpty === false) {
    // Nothing can be emptied: both levels in one statement (the study figures do not read the
    // series counts; a data-modifying WITH runs to completion whether or not it is read).
    if (seriesPks.length > 0 && studyPks.length > 0) {
      await trx.raw(`WITH counted AS (${SERIES_COUNTS} RETURNING s.id) ${STUDY_AGGREGATES}`, [seriesPks, studyPks]);
    } else if (seriesPks.length > 0) {
      await trx.raw(SERIES_COUNTS, [seriesPks]);
    } else if (studyPks.length > 0) {
      await trx.raw(STUDY_AGGREGATES, [studyPks]);
    }
    return [];
  }
  if (seriesPks.length > 0) {
    await trx.raw(SERIES_COUNTS, [seriesPks]);
    await trx.raw(`DELETE FROM series s WHERE s.id = ANY(?::bigint[]) AND s.num_instances = 0`, [seriesPks]);
  }
  if (studyPks.length > 0) {
    await trx.raw(STUDY_AGGREGATES, [studyPks]);
    const removed = await trx.raw(`DELETE FROM studies st WHERE st.id = ANY(?::bigint[]) AND st.num_instances = 0 RETURNING st.id, st.fhir_id`, [
      studyPks,
    ]);
    return (removed.rows as Array<{ id: string; fhir_id: string | null }>).map((r) => ({ id: Number(r.id), fhirId: r.fhir_id }));
  }
  return [];
}

const SERIES_COUNTS = `UPDATE series s SET num_instances = (SELECT count(*) FROM instances i WHERE i.series_pk = s.id), updated_at = now()
  WHERE s.id = ANY(?::bigint[])`;

const STUDY_AGGREGATES = `UPDATE studies st SET
    num_series = (SELECT count(*) FROM series se WHERE se.study_pk = st.id),
    num_instances = (SELECT count(*) FROM instances i WHERE i.study_pk = st.id),
    modalities = coalesce((SELECT array_agg(DISTINCT se.modality ORDER BY se.modality) FROM series se
                            WHERE se.study_pk = st.id AND se.modality IS NOT NULL), '{}'),
    sop_classes = coalesce((SELECT array_agg(DISTINCT i.sop_class_uid ORDER BY i.sop_class_uid) FROM instances i
                             WHERE i.study_pk = st.id), '{}'),
    updated_at = now()
  WHERE st.id = ANY(?::bigint[])`;
