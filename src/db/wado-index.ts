import type { Knex } from 'knex';
import type { ByteRange, FrameLocation } from '../dicom/types';
import { queryPrepared } from './prepared-statement';

/**
 * Index look-ups for WADO-RS: which instances a target names, where their bytes are, and their
 * metadata as stored. Nothing here reads a blob.
 */

/**
 * The studies a caller may see: called on a query builder over `studies` (unaliased), it adds
 * where-clauses. `onColumn`, when offered, narrows any query holding a study primary key in
 * `column` directly (one correlated EXISTS instead of `IN (SELECT ... FROM studies)`); with
 * `fewStudies` the caller says the rest of its query already names a handful of studies.
 */
export type StudyRestriction = ((qb: Knex.QueryBuilder) => void) & {
  onColumn?: (qb: Knex.QueryBuilder, column: string, options?: { fewStudies?: boolean }) => void;
};

/** Narrows `qb` to the studies `restrict` allows, by the study key in `column`. */
export function applyStudyRestriction(knex: Knex, qb: Knex.QueryBuilder, column: string, restrict: StudyRestriction, options: { fewStudies?: boolean } = {}): void {
  if (restrict.onColumn) restrict.onColumn(qb, column, options);
  else qb.whereIn(column, restrictedStudies(knex, restrict));
}

/** A study, series or instance (PS3.18 10.4.1: the target resource of a retrieve). */
export interface RetrieveTarget {
  studyInstanceUID: string;
  seriesInstanceUID?: string;
  sopInstanceUID?: string;
}

/** Where an instance's bytes are and how they are encoded. */
export interface StoredInstance {
  studyInstanceUID: string;
  seriesInstanceUID: string;
  sopInstanceUID: string;
  sopClassUID: string;
  transferSyntaxUID: string;
  blobKey: string;
  size: number;
  hasFileMeta: boolean;
  headerLength: number;
  pixelDataOffset: number | null;
}

/** The pixel description a frame answer (and a transcoder) needs. */
export interface PixelDescription {
  rows: number | null;
  columns: number | null;
  bitsAllocated: number | null;
  bitsStored: number | null;
  samplesPerPixel: number | null;
  photometricInterpretation: string | null;
  pixelRepresentation: number | null;
  planarConfiguration: number | null;
  numberOfFrames: number | null;
}

/** An instance with the locations of the requested frames only. */
export interface StoredFrames extends StoredInstance {
  pixel: PixelDescription;
  /** Number of frame locations recorded at ingest (0: no pixel data). */
  frameCount: number;
  /** Locations of the requested frames, in request order (only valid where the number is in range). */
  locations: FrameLocation[];
}

/** Instance rows (aliased i, se, st) of a study, series or instance target, within the restriction. */
export function baseQuery(knex: Knex, target: RetrieveTarget, restrict?: StudyRestriction): Knex.QueryBuilder {
  const qb = knex('instances as i')
    .join('series as se', 'se.id', 'i.series_pk')
    .join('studies as st', 'st.id', 'i.study_pk')
    .where('st.study_uid', target.studyInstanceUID);
  if (target.seriesInstanceUID !== undefined) qb.where('se.series_uid', target.seriesInstanceUID);
  if (target.sopInstanceUID !== undefined) qb.where('i.sop_instance_uid', target.sopInstanceUID);
  if (restrict) applyStudyRestriction(knex, qb, 'st.id', restrict);
  return qb;
}

/** `SELECT studies.id FROM studies WHERE <restriction>`, for `whereIn`. */
export function restrictedStudies(knex: Knex, restrict: StudyRestriction): Knex.QueryBuilder {
  const sub = knex('studies').select('studies.id');
  restrict(sub);
  return sub;
}

/** The columns `toStoredInstance` reads. */
export const LOCATION_COLUMNS = [
  'st.study_uid',
  'se.series_uid',
  'i.sop_instance_uid',
  'i.sop_class_uid',
  'i.transfer_syntax_uid',
  'i.blob_key',
  'i.size',
  'i.has_file_meta',
  'i.header_length',
  'i.pixel_data_offset',
];

/** An index row (LOCATION_COLUMNS) as a StoredInstance. */
export function toStoredInstance(r: Record<string, unknown>): StoredInstance {
  return {
    studyInstanceUID: String(r.study_uid),
    seriesInstanceUID: String(r.series_uid),
    sopInstanceUID: String(r.sop_instance_uid),
    sopClassUID: String(r.sop_class_uid),
    transferSyntaxUID: String(r.transfer_syntax_uid),
    blobKey: String(r.blob_key),
    size: Number(r.size),
    hasFileMeta: Boolean(r.has_file_meta),
    headerLength: Number(r.header_length),
    pixelDataOffset: r.pixel_data_offset === null || r.pixel_data_offset === undefined ? null : Number(r.pixel_data_offset),
  };
}

/** The instances a target names, in series then instance number order. */
export async function findStoredInstances(knex: Knex, target: RetrieveTarget, restrict?: StudyRestriction): Promise<StoredInstance[]> {
  if (!restrict) {
    const { sql, values } = unrestrictedInstances(target);
    const rows = await queryPrepared(knex, sql, values);
    const text = rows[0]?.instance_rows;
    return (JSON.parse(String(text ?? '[]')) as unknown[][]).map(storedInstanceFromArray);
  }
  const rows = await baseQuery(knex, target, restrict)
    .select(LOCATION_COLUMNS)
    .orderBy([{ column: 'se.series_number', nulls: 'last' }, 'se.id', { column: 'i.instance_number', nulls: 'last' }, 'i.id']);
  return rows.map(toStoredInstance);
}

/** What a DIMSE retrieve (C-GET, C-MOVE) names: its unique keys; every list given must match. */
export interface RetrieveKeyTarget {
  patientID?: string;
  issuerOfPatientID?: string;
  studyInstanceUIDs: readonly string[];
  seriesInstanceUIDs: readonly string[];
  sopInstanceUIDs: readonly string[];
}

/** The instances a DIMSE retrieve names, within the restriction, in study, series and instance order. */
export async function findInstancesByKeys(knex: Knex, keys: RetrieveKeyTarget, restrict?: StudyRestriction): Promise<StoredInstance[]> {
  const qb = knex('instances as i').join('series as se', 'se.id', 'i.series_pk').join('studies as st', 'st.id', 'i.study_pk');
  if (keys.patientID !== undefined) qb.where('st.patient_id', keys.patientID);
  if (keys.issuerOfPatientID !== undefined) qb.where('st.issuer_of_patient_id', keys.issuerOfPatientID);
  if (keys.studyInstanceUIDs.length > 0) qb.whereIn('st.study_uid', [...keys.studyInstanceUIDs]);
  if (keys.seriesInstanceUIDs.length > 0) qb.whereIn('se.series_uid', [...keys.seriesInstanceUIDs]);
  if (keys.sopInstanceUIDs.length > 0) qb.whereIn('i.sop_instance_uid', [...keys.sopInstanceUIDs]);
  if (restrict) applyStudyRestriction(knex, qb, 'st.id', restrict);
  const rows = await qb
    .select(LOCATION_COLUMNS)
    .orderBy(['st.id', { column: 'se.series_number', nulls: 'last' }, 'se.id', { column: 'i.instance_number', nulls: 'last' }, 'i.id']);
  return rows.map(toStoredInstance);
}

/** unrestrictedInstances' texts by WHERE clause (one per target level). */
const instanceStatements = new Map<string, string>();

/**
 * findStoredInstances for a caller who may see every study (a study retrieve of a viewer or a
 * research tool), as one fixed statement per target level, prepared (queryPrepared: a named statement on a
 * database server, and on the embedded engine through its statement cache, embedded-statements.ts), whose
 * rows come back as one JSON text of arrays in LOCATION_COLUMNS order: per-row and per-column
 * conversion of a 100-instance study by the driver (node-postgres, or PGlite on the server's own
 * thread) cost more than parsing one text, and building the query with knex more than both.
 */
function unrestrictedInstances(target: RetrieveTarget): { sql: string; values: string[] } {
  const values = [target.studyInstanceUID];
  let where = 'st.study_uid = ?';
  if (target.seriesInstanceUID !== undefined) {
    where += ' AND se.series_uid = ?';
    values.push(target.seriesInstanceUID);
  }
  if (target.sopInstanceUID !== undefined) {
    where += ' AND i.sop_instance_uid = ?';
    values.push(target.sopInstanceUID);
  }
  let sql = instanceStatements.get(where);
  if (sql === undefined) {
    sql = `SELECT coalesce(json_agg(json_build_array(${LOCATION_COLUMNS.join(', ')})
                  ORDER BY se.series_number NULLS LAST, se.id, i.instance_number NULLS LAST, i.id), '[]')::text AS instance_rows
  FROM instances i JOIN series se ON se.id = i.series_pk JOIN studies st ON st.id = i.study_pk
  WHERE ${where}`;
    instanceStatements.set(where, sql);
  }
  return { sql, values };
}

/** LOCATION_COLUMNS without their table aliases: the keys toStoredInstance reads. */
const LOCATION_KEYS = LOCATION_COLUMNS.map((c) => c.slice(c.indexOf('.') + 1));

/** One element of unrestrictedInstances' array (LOCATION_COLUMNS order) as a StoredInstance. */
function storedInstanceFromArray(v: unknown[]): StoredInstance {
  const row: Record<string, unknown> = {};
  for (let k = 0; k < LOCATION_KEYS.length; k++) row[LOCATION_KEYS[k]!] = v[k];
  return toStoredInstance(row);
}

/** The columns and expressions findStoredFrames reads besides LOCATION_COLUMNS; `locations` takes the frame numbers. */
const FRAME_COLUMNS = ['i.rows', 'i.columns', 'i.bits_allocated', 'i.bits_stored', 'i.samples_per_pixel', 'i.photometric_interpretation', 'i.number_of_frames'];
const FRAME_EXPRESSIONS = [
  `jsonb_array_length(i.frames) AS frame_count`,
  `i.dataset #>> '{00280103,Value,0}' AS pixel_representation`,
  `i.dataset #>> '{00280006,Value,0}' AS planar_configuration`,
  `(SELECT coalesce(jsonb_agg(i.frames -> (u.n - 1) ORDER BY u.ord), '[]'::jsonb)
      FROM unnest(?::int[]) WITH ORDINALITY AS u(n, ord)) AS locations`,
];

/** The names findStoredFrames reads a row by: LOCATION_COLUMNS, FRAME_COLUMNS and FRAME_EXPRESSIONS, in that order. */
const FRAME_ROW_KEYS = [...LOCATION_COLUMNS, ...FRAME_COLUMNS, ...FRAME_EXPRESSIONS].map((c) => /(?:AS |\.)(\w+)$/.exec(c)![1]);

/**
 * findStoredFrames for a caller who may see every study, as one fixed statement: the frame
 * request is the most frequent read of a viewer, and building the same query with the query
 * builder for each one cost as much server time as the rest of the look-up. Prepared (see
 * queryPrepared): planning it took PostgreSQL 0.35 ms, four times its execution. The row comes
 * back as one JSON array (FRAME_ROW_KEYS order), not 21 columns: node-postgres describes and
 * converts every column of every answer one by one, which cost more than parsing the array.
 */
const unrestrictedFrames = (locations: string) => `SELECT json_build_array(${[...LOCATION_COLUMNS, ...FRAME_COLUMNS, ...FRAME_EXPRESSIONS.slice(0, -1), locations].map((c) => c.replace(/ AS \w+$/, '')).join(', ')})::text AS frame_row
  FROM instances i JOIN series se ON se.id = i.series_pk JOIN studies st ON st.id = i.study_pk
  WHERE st.study_uid = ? AND se.series_uid = ? AND i.sop_instance_uid = ? LIMIT 1`;
const UNRESTRICTED_FRAMES = unrestrictedFrames(FRAME_EXPRESSIONS[FRAME_EXPRESSIONS.length - 1]);
/** The same for one frame (a viewer's request), without the unnest and aggregate: ~10 us less of PostgreSQL per call (pgbench). */
const UNRESTRICTED_FRAME = unrestrictedFrames(`jsonb_build_array(i.frames -> (?::int - 1))`);

/** A JSON array row of UNRESTRICTED_FRAMES as the record the query builder gives for the same columns. */
function frameRowFromJson(text: string): Record<string, any> {
  const values = JSON.parse(text) as unknown[];
  const row: Record<string, unknown> = {};
  for (let i = 0; i < FRAME_ROW_KEYS.length; i++) row[FRAME_ROW_KEYS[i]] = values[i];
  return row;
}

/**
 * One instance with the locations of `frameNumbers` (1-based) only, so that a single frame of a
 * long volume transfers one small JSON value from the database, not the whole frame table.
 */
export async function findStoredFrames(
  knex: Knex,
  target: Required<RetrieveTarget>,
  frameNumbers: number[],
  restrict?: StudyRestriction,
): Promise<StoredFrames | null> {
  let row: Record<string, any> | undefined;
  if (restrict) {
    row = await baseQuery(knex, target, restrict).first([
      ...LOCATION_COLUMNS,
      ...FRAME_COLUMNS,
      ...FRAME_EXPRESSIONS.map((sql) => knex.raw(sql, sql.includes('?') ? [frameNumbers] : [])),
    ]);
  } else {
    const one = frameNumbers.length === 1;
    const sql = one ? UNRESTRICTED_FRAME : UNRESTRICTED_FRAMES;
    const found = (await queryPrepared(knex, sql, [one ? frameNumbers[0] : frameNumbers, target.studyInstanceUID, target.seriesInstanceUID, target.sopInstanceUID]))[0];
    row = found ? frameRowFromJson(String(found.frame_row)) : undefined;
  }
  if (!row) return null;
  const num = (v: unknown) => (v === null || v === undefined || v === '' || !Number.isFinite(Number(v)) ? null : Number(v));
  const locations = typeof row.locations === 'string' ? JSON.parse(row.locations) : row.locations;
  return {
    ...toStoredInstance(row),
    frameCount: Number(row.frame_count),
    locations: (locations as Array<ByteRange[] | null>).map((l) => l?.map((r) => ({ offset: Number(r.offset), length: Number(r.length) })) ?? null),
    pixel: {
      rows: num(row.rows),
      columns: num(row.columns),
      bitsAllocated: num(row.bits_allocated),
      bitsStored: num(row.bits_stored),
      samplesPerPixel: num(row.samples_per_pixel),
      photometricInterpretation: row.photometric_interpretation ?? null,
      pixelRepresentation: num(row.pixel_representation),
      planarConfiguration: num(row.planar_configuration),
      numberOfFrames: num(row.number_of_frames),
    },
  };
}

/** Where one instance's bytes are. */
export async function findStoredInstance(knex: Knex, target: Required<RetrieveTarget>, restrict?: StudyRestriction): Promise<StoredInstance | null> {
  const row = await baseQuery(knex, target, restrict).first(LOCATION_COLUMNS);
  return row ? toStoredInstance(row) : null;
}

/** Which level of a target is missing, for a 404 that says so; null when the target exists. */
export async function findMissingLevel(
  knex: Knex,
  target: RetrieveTarget,
  restrict?: StudyRestriction,
): Promise<'study' | 'series' | 'instance' | null> {
  const study = knex('studies as st').where('st.study_uid', target.studyInstanceUID);
  if (restrict) applyStudyRestriction(knex, study, 'st.id', restrict);
  if (!(await study.first('st.id'))) return 'study';
  if (target.seriesInstanceUID !== undefined) {
    const series = await knex('series as se')
      .join('studies as st', 'st.id', 'se.study_pk')
      .where({ 'st.study_uid': target.studyInstanceUID, 'se.series_uid': target.seriesInstanceUID })
      .first('se.id');
    if (!series) return 'series';
  }
  if (target.sopInstanceUID !== undefined) {
    if (!(await baseQuery(knex, target, restrict).first('i.id'))) return 'instance';
  }
  return null;
}

/** A page of instance metadata: the stored header with the Transfer Syntax and Pixel Data reference added, as JSON text. */
export interface MetadataRow {
  studyInstanceUID: string;
  seriesInstanceUID: string;
  sopInstanceUID: string;
  json: string;
  cursor: MetadataCursor;
}

/** Keyset position: (series number, series id, instance number, instance id). */
export type MetadataCursor = [number, number, number, number];

const NATIVE_SYNTAXES = ['1.2.840.10008.1.2', '1.2.840.10008.1.2.1', '1.2.840.10008.1.2.2', '1.2.840.10008.1.2.1.99'];
const NO_NUMBER = 2147483647;

/**
 * Up to `limit` instances' metadata after `after`, ordered by series then instance number. The
 * database adds AvailableTransferSyntaxUID (0008,3002) and, when the header as stored has no
 * Pixel Data element, a relative BulkDataURI for it; keys stay in tag order (jsonb sorts them).
 */
export async function findMetadataPage(
  knex: Knex,
  target: RetrieveTarget,
  after: MetadataCursor | null,
  limit: number,
  restrict?: StudyRestriction,
): Promise<MetadataRow[]> {
  const order = `coalesce(se.series_number, ${NO_NUMBER}), se.id, coalesce(i.instance_number, ${NO_NUMBER}), i.id`;
  const qb = baseQuery(knex, target, restrict).select(
    'st.study_uid',
    'se.series_uid',
    'i.sop_instance_uid',
    knex.raw(`coalesce(se.series_number, ${NO_NUMBER}) AS series_order`),
    knex.raw(`se.id AS series_id`),
    knex.raw(`coalesce(i.instance_number, ${NO_NUMBER}) AS instance_order`),
    knex.raw(`i.id AS instance_id`),
    knex.raw(
      `(i.dataset
          || jsonb_build_object('00083002', jsonb_build_object('vr', 'UI', 'Value', jsonb_build_array(i.transfer_syntax_uid)))
          || CASE WHEN i.pixel_data_offset IS NOT NULL
                   AND i.dataset -> '7FE00010' IS NULL AND i.dataset -> '7FE00008' IS NULL AND i.dataset -> '7FE00009' IS NULL
              THEN jsonb_build_object('7FE00010', jsonb_build_object(
                     'vr', CASE WHEN i.transfer_syntax_uid = ANY(?::text[]) AND coalesce(i.bits_allocated, 8) > 8 THEN 'OW' ELSE 'OB' END,
                     'BulkDataURI', 'bulkdata/7FE00010'))
              ELSE '{}'::jsonb END
        )::text AS json`,
      [NATIVE_SYNTAXES],
    ),
  );
  if (after) qb.whereRaw(`(${order}) > (?, ?, ?, ?)`, after);
  const rows = await qb.orderByRaw(order).limit(limit);
  return rows.map((r: Record<string, unknown>) => ({
    studyInstanceUID: String(r.study_uid),
    seriesInstanceUID: String(r.series_uid),
    sopInstanceUID: String(r.sop_instance_uid),
    json: String(r.json),
    cursor: [Number(r.series_order), Number(r.series_id), Number(r.instance_order), Number(r.instance_id)],
  }));
}

/** A study as the privacy layer needs it: its patient and the project a researcher sees it through. */
export interface StudyPrivacyRow {
  studyInstanceUID: string;
  studyPk: number;
  patientPk: number;
  /** The alphabetically first of `projectIds` holding the study (null: none does). */
  projectId: string | null;
}

/**
 * The patient and viewing project of each study, in one query: the project is the first (by id)
 * of `projectIds` that the study is linked to ('all': of every project it is linked to).
 */
export async function findStudyPrivacyRows(knex: Knex, studyUids: readonly string[], projectIds: readonly string[] | 'all'): Promise<StudyPrivacyRow[]> {
  if (studyUids.length === 0) return [];
  const projectFilter = projectIds === 'all' ? '' : ' AND ps.project_id = ANY(?::text[])';
  const bindings = projectIds === 'all' ? [] : [[...projectIds]];
  const rows = await knex('studies as st')
    .whereIn('st.study_uid', [...new Set(studyUids)])
    .select(
      'st.id',
      'st.study_uid',
      'st.patient_pk',
      knex.raw(`(SELECT min(ps.project_id) FROM project_studies ps WHERE ps.study_pk = st.id${projectFilter}) AS project_id`, bindings),
    );
  return rows.map((r: Record<string, unknown>) => ({
    studyInstanceUID: String(r.study_uid),
    studyPk: Number(r.id),
    patientPk: Number(r.patient_pk),
    projectId: r.project_id === null || r.project_id === undefined ? null : String(r.project_id),
  }));
}

/** Every project id (for a de-identified view whose row filter is every project). */
export async function findProjectIds(knex: Knex): Promise<string[]> {
  const rows = await knex('projects').select('id').orderBy('id');
  return rows.map((r: { id: string }) => r.id);
}

/** SOP Instance UIDs of every instance in the series of the given instances (at most `limit`). */
export async function findSeriesSiblingUids(knex: Knex, sopInstanceUids: readonly string[], limit: number): Promise<string[]> {
  if (sopInstanceUids.length === 0) return [];
  const rows = await knex('instances as i2')
    .whereIn('i2.series_pk', knex('instances as i').select('i.series_pk').whereIn('i.sop_instance_uid', [...sopInstanceUids]))
    .limit(limit)
    .pluck('i2.sop_instance_uid');
  return rows as string[];
}
