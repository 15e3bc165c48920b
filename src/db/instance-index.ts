import type { Knex } from 'knex';
import type { ScannedInstance } from '../dicom/types';
import { withTransaction } from './database';
import { jsonWithoutNul } from './level-attributes';
import { levelsWithQueries, patientIdentity, upsertLevels } from './level-upsert';
import { keyedStatement, queryPrepared, singleKeys } from './prepared-statement';
import { intOrNull, textOrNull, toSqlDate } from './normalize';

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
  /** The same with the study key as the SQL expression `key` (not bound): texts and the other bindings. */
  overKey?(key: string): { ctes: string; select: string; bindings: Knex.RawBinding[] };
}

/** Called inside the index transaction after rows and aggregates are written; a throw rolls everything back. */
export type OnIndexChange = (trx: Knex.Transaction, change: IndexChange) => Promise<void>;

/** Work of an index change besides the rows themselves; a throw from either function rolls everything back. */
export interface IndexHooks {
  /**
   * Runs first in the index transaction, before any row is locked: writes that do not depend on
   * the change (the request's AuditEvent), so that the study lock taken next is held for as few
   * round trips as possible (concurrent STOWs into one study wait for it in turn).
   */
  before?: (trx: Knex.Transaction) => Promise<void>;
  /**
   * Like `before`, but sent within the transaction's first statement (the levels upsert), ahead
   * of its row locks: one round trip less. `written` is called once that statement succeeded.
   */
  leading?: LeadingInsert;
  onChange?: OnIndexChange;
  alongside?: AlongsideQuery;
}

/** An INSERT of one row (`... RETURNING 1`, `?` placeholders) that does not depend on the change. */
export interface LeadingInsert {
  sql: string;
  values: unknown[];
  written(trx: Knex.Transaction): void;
}

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
export async function indexInstances(knex: Knex, items: InstanceToIndex[], hooks: IndexHooks = {}): Promise<IndexOutcome[]> {
  const { before, onChange, alongside } = hooks;
  const order = items
    .map((item, i) => ({ item, i }))
    .sort((a, b) => compareKeys(a.item, b.item) || a.item.order - b.item.order);
  const perUid = new Map<string, number>();
  for (const { item } of order) perUid.set(item.scanned.attributes.sopInstanceUID, (perUid.get(item.scanned.attributes.sopInstanceUID) ?? 0) + 1);
  const turn = items.length === 1 ? takeStudyTurn(knex, items[0].scanned.attributes.studyInstanceUID) : null;
  try {
    // Waited for before a connection is taken: a transaction waiting for its turn must not hold
    // one that the transaction whose turn it is may need again (a retry after a deadlock).
    await turn?.ready;
    return await withTransaction(knex, indexInTransaction);
  } finally {
    turn?.release();
  }

  async function indexInTransaction(trx: Knex.Transaction): Promise<IndexOutcome[]> {
    if (before) await before(trx);
    // Taken by the first levels statement of this attempt (every attempt starts with one).
    let leading = hooks.leading;
    if (items.length === 1) {
      const along = onChange ? alongside : undefined;
      const alone = await indexAlone(trx, items[0], leading, along);
      if (leading) {
        leading.written(trx);
        leading = undefined;
      }
      if (alone) {
        if (!alone.counted) await refreshAggregates(trx, [alone.seriesPk], [alone.studyPk], { mayEmpty: false });
        if (onChange) await onChange(trx, { studyPks: [alone.studyPk], removedStudies: [], alongside: alone.counted ? alone.alongsideRow : undefined });
        return [{ status: 'created' }];
      }
    }
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
        const pks = await upsertLevels(trx, item.scanned, identity, { patientPk, studyPk }, leading);
        if (leading) {
          leading.written(trx);
          leading = undefined;
        }
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
  }
}

/**
 * Single-instance STOWs of this process into one study take turns: each transaction starts its
 * first statement once the previous one into that study has ended. They would wait for each other
 * anyway (the statement locks the study row until commit), but inside PostgreSQL a statement that
 * waited there works on a snapshot older than the row it then updates: it re-checks the updates
 * on the newest row version (EvalPlanQual, which sets up the statement's plan again), retries
 * its ON CONFLICT, or finds a level it cannot read and takes the general path. At 8 concurrent
 * single-instance requests into one study that was ~10% of the database's CPU (perf, `bench/stow.ts`
 * x1 c8). Other processes, and requests of several instances, still rely on the row locks alone.
 * A turn is waited for before any connection or lock is taken, and its holder never waits for
 * another turn, so turns add no deadlock.
 */
function takeStudyTurn(knex: Knex, studyInstanceUID: string): { ready: Promise<void>; release: () => void } {
  let turns = studyTurns.get(knex);
  if (!turns) {
    turns = new Map();
    studyTurns.set(knex, turns);
  }
  const map = turns;
  const previous = map.get(studyInstanceUID) ?? Promise.resolve();
  let release!: () => void;
  const ended = new Promise<void>((resolve) => (release = resolve));
  const last = previous.then(() => ended);
  map.set(studyInstanceUID, last);
  return {
    ready: previous,
    release: () => {
      release();
      if (map.get(studyInstanceUID) === last) map.delete(studyInstanceUID);
    },
  };
}

/** The last turn queued per study, per database; entries go when their turn ends with nobody after it. */
const studyTurns = new WeakMap<Knex, Map<string, Promise<void>>>();

/**
 * One instance new to the index (the usual single-instance STOW) in ONE statement: the levels
 * upsert (with the leading INSERT), the instance row, the counts and the hook's alongside work,
 * one round trip less than upsertLevels() and insertInstances(). The counts are brought up to
 * date there only for levels that existed unchanged before the statement (a new or changed row is
 * not visible to, or not updated again by, a later WITH query of the same statement): otherwise
 * `counted` is false and the caller recounts them in a statement of its own. Returns null, having
 * inserted no instance, when a level's key could not be read (committed by another transaction
 * after the statement's snapshot) or the UID is indexed already: the caller then takes the
 * general path in the same transaction.
 */
async function indexAlone(
  trx: Knex.Transaction,
  item: InstanceToIndex,
  leading: LeadingInsert | undefined,
  alongside: AlongsideQuery | undefined,
): Promise<{ studyPk: number; seriesPk: number; counted: boolean; alongsideRow?: Record<string, unknown> } | null> {
  const levels = levelsWithQueries(item.scanned, patientIdentity(item.scanned), leading);
  const along = alongside?.overKey?.('(SELECT study_pk FROM levels)');
  const json = jsonWithoutNul([instanceRow(item, 0, 0, false)]);
  const row = (await queryPrepared(trx, aloneStatement(levels.ctes, along), [...levels.values, json, ...(along?.bindings ?? [])]))[0];
  const uids = row?.inserted_uids;
  const inserted = (typeof uids === 'string' ? JSON.parse(uids) : (uids ?? [])) as string[];
  if (!row || row.lv_series_pk === null || inserted.length === 0) return null;
  const { lv_patient_pk: _p, lv_study_pk: studyPk, lv_series_pk: seriesPk, inserted_uids: _u, counted_now: c, studied_now: st, ...rest } = row;
  return { studyPk: Number(studyPk), seriesPk: Number(seriesPk), counted: Boolean(c && st), alongsideRow: along ? rest : undefined };
}

const aloneStatements = new Map<string, string>();

/** The statement of indexAlone() for the levels' WITH queries and the hook's alongside work (`?`: levels, instance JSON, alongside). */
function aloneStatement(levelCtes: string, along?: { ctes: string; select: string }): string {
  const key = `${levelCtes}\u0000${along?.ctes ?? ''}\u0000${along?.select ?? ''}`;
  let sql = aloneStatements.get(key);
  if (sql === undefined) {
    const values = INSTANCE_COLUMNS.map(([n]) => (n === 'series_pk' || n === 'study_pk' ? `k.${n}` : `x."${n}"`)).join(', ');
    sql = `WITH ${levelCtes},
  ins AS (
    INSERT INTO instances (${INSTANCE_NAMES}) SELECT ${values}
    FROM levels k, jsonb_to_recordset(?::jsonb) AS x(${INSTANCE_DEFS})
    WHERE k.patient_pk IS NOT NULL AND k.study_pk IS NOT NULL AND k.series_pk IS NOT NULL
    ON CONFLICT (sop_instance_uid) DO NOTHING
    RETURNING sop_instance_uid, series_pk, study_pk, sop_class_uid),
  counted AS (
    UPDATE series s SET num_instances = s.num_instances + (SELECT count(*) FROM ins WHERE ins.series_pk = s.id), updated_at = now()
    WHERE s.id = (SELECT series_pk FROM levels)
    RETURNING s.id),
  studied AS (
    UPDATE studies st SET
      num_instances = st.num_instances + (SELECT count(*) FROM ins WHERE ins.study_pk = st.id),
      sop_classes = coalesce((SELECT array_agg(DISTINCT u.c ORDER BY u.c) FROM (
                                SELECT unnest(st.sop_classes) AS c
                                UNION ALL SELECT ins.sop_class_uid FROM ins WHERE ins.study_pk = st.id) u), '{}'),${along ? '\n      fhir_id = coalesce(st.fhir_id, gen_random_uuid()::text),' : ''}
      updated_at = now()
    WHERE st.id = (SELECT study_pk FROM levels)
    RETURNING st.id)${along?.ctes ?? ''}
SELECT k.patient_pk AS lv_patient_pk, k.study_pk AS lv_study_pk, k.series_pk AS lv_series_pk,
       (SELECT coalesce(json_agg(sop_instance_uid), '[]') FROM ins) AS inserted_uids,
       EXISTS (SELECT 1 FROM counted) AS counted_now, EXISTS (SELECT 1 FROM studied) AS studied_now${along ? ', a.*' : ''}
FROM levels k${along ? ` LEFT JOIN LATERAL (${along.select}) a ON true` : ''}`;
    aloneStatements.set(key, sql);
  }
  return sql;
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
 * travel as one JSON text that PostgreSQL unpacks (jsonb_to_recordset), instead of one INSERT
 * (and round trip) each. Taken as jsonb, the text is parsed once, and each header goes into its
 * jsonb column as it is; as json it was read three times (checked by json's input, split by
 * json_to_recordset, parsed by jsonb's input): 40-55 against 60-80 µs of backend CPU per CT
 * slice. The same statement refreshes the aggregates of the given series and studies by adding
 * the inserted rows to the counts and SOP classes the rows hold: those are exact (every writer
 * keeps them so, and a recount follows any other change), and the rows are locked since
 * upsertLevels(), so no other writer can have changed them. Recounting instead
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
    const rows = await queryPrepared(trx, INSERT_AND_COUNT.many, [json, seriesPks, studyPks]);
    return { uids: new Set(rows.map((r) => r.sop_instance_uid as string)) };
  }
  if (!alongside) {
    const rows = await queryPrepared(trx, INSERT_AND_COUNT.one, [json, seriesPks[0], studyPks[0]]);
    return { uids: new Set(rows.map((r) => r.sop_instance_uid as string)) };
  }
  const row = (await queryPrepared(trx, insertAlongside(alongside), [json, seriesPks[0], studyPks[0], ...alongside.bindings(studyPks[0])]))[0] as Record<string, unknown>;
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
    INSERT INTO instances (${INSTANCE_NAMES}) SELECT ${INSTANCE_NAMES} FROM jsonb_to_recordset(?::jsonb) AS x(${INSTANCE_DEFS})
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
