import type { Knex } from 'knex';
import type { DicomJson, FrameLocation } from '../dicom/types';
import { baseQuery, LOCATION_COLUMNS, toStoredInstance, type RetrieveTarget, type StudyRestriction } from './wado-index';

/**
 * Index look-ups for rendered / thumbnail resources and transcoding: which instances a target
 * holds with pixel data, and for one frame everything rendering needs (its byte ranges, the
 * header as DICOM JSON, and its functional group item). Nothing here reads a blob.
 */

/** One instance with pixel data, as listed for a study or series (light: no header). */
export interface PixelInstanceRef {
  studyInstanceUID: string;
  seriesInstanceUID: string;
  sopInstanceUID: string;
  /** Number of frame locations recorded at ingest. */
  frameCount: number;
}

/** Where one instance's bytes are, and how they are encoded. */
export interface PixelInstanceLocation {
  studyInstanceUID: string;
  seriesInstanceUID: string;
  sopInstanceUID: string;
  sopClassUID: string;
  transferSyntaxUID: string;
  blobKey: string;
  hasFileMeta: boolean;
  headerLength: number;
  pixelDataOffset: number | null;
  frameCount: number;
}

/** One frame of one instance, ready to render. */
export interface PixelFrameRow extends PixelInstanceLocation {
  /** The header as DICOM JSON without the Per-Frame Functional Groups (which can be large). */
  dataset: DicomJson;
  /** The frame's Per-Frame Functional Groups item, and the Shared one, when present. */
  frameGroups: Array<DicomJson | undefined>;
  location: FrameLocation;
}

/** An instance with every frame location, for transcoding. */
export interface PixelInstanceRow extends PixelInstanceLocation {
  dataset: DicomJson;
  frames: FrameLocation[];
}

/** Instances that hold pixel data: located Pixel Data, or a deflated data set (whose frames are null but present). */
const HAS_PIXELS = `(i.pixel_data_offset IS NOT NULL OR (i.transfer_syntax_uid = '1.2.840.10008.1.2.1.99' AND jsonb_array_length(i.frames) > 0))`;

function toLocation(r: Record<string, unknown>): PixelInstanceLocation {
  return { ...toStoredInstance(r), frameCount: Number(r.frame_count ?? 0) };
}

function json<T>(value: unknown): T {
  return (typeof value === 'string' ? JSON.parse(value) : value) as T;
}

function toLocations(value: unknown): FrameLocation[] {
  return (json<Array<Array<{ offset: unknown; length: unknown }> | null>>(value) ?? []).map(
    (l) => l?.map((r) => ({ offset: Number(r.offset), length: Number(r.length) })) ?? null,
  );
}

/** The instances of a target that have pixel data, in series number then instance number order. */
export async function listPixelInstances(knex: Knex, target: RetrieveTarget, restrict?: StudyRestriction): Promise<PixelInstanceRef[]> {
  const rows = await baseQuery(knex, target, restrict)
    .whereRaw(HAS_PIXELS)
    .select('st.study_uid', 'se.series_uid', 'i.sop_instance_uid', knex.raw('jsonb_array_length(i.frames) AS frame_count'))
    .orderBy([{ column: 'se.series_number', nulls: 'last' }, 'se.id', { column: 'i.instance_number', nulls: 'last' }, 'i.id']);
  return rows.map((r: Record<string, unknown>) => ({
    studyInstanceUID: String(r.study_uid),
    seriesInstanceUID: String(r.series_uid),
    sopInstanceUID: String(r.sop_instance_uid),
    frameCount: Number(r.frame_count),
  }));
}

/** True when the target (study, series or instance) exists and is visible, pixel data or not. */
export async function targetExists(knex: Knex, target: RetrieveTarget, restrict?: StudyRestriction): Promise<boolean> {
  return (await baseQuery(knex, target, restrict).first('i.id')) !== undefined;
}

/** One frame (1-based) of one instance with what rendering needs; null when the instance is not visible. */
export async function findPixelFrame(
  knex: Knex,
  target: Required<RetrieveTarget>,
  frameNumber: number,
  restrict?: StudyRestriction,
): Promise<PixelFrameRow | null> {
  const n = frameNumber - 1;
  const row = await baseQuery(knex, target, restrict).first([
    ...LOCATION_COLUMNS,
    knex.raw('jsonb_array_length(i.frames) AS frame_count'),
    knex.raw(`i.dataset - '52009230' AS dataset`),
    knex.raw(`i.dataset #> ARRAY['52009230', 'Value', ?::text] AS frame_group`, [String(n)]),
    knex.raw(`i.dataset #> '{52009229,Value,0}' AS shared_group`),
    knex.raw(`i.frames -> ?::int AS location`, [n]),
  ]);
  if (!row) return null;
  const frameGroup = json<DicomJson | null>(row.frame_group) ?? undefined;
  const sharedGroup = json<DicomJson | null>(row.shared_group) ?? undefined;
  const location = json<Array<{ offset: unknown; length: unknown }> | null>(row.location);
  return {
    ...toLocation(row),
    dataset: json<DicomJson>(row.dataset),
    frameGroups: [frameGroup, sharedGroup],
    location: location ? location.map((r) => ({ offset: Number(r.offset), length: Number(r.length) })) : null,
  };
}

/** An instance with all frame locations, by SOP Instance UID and blob key (the exact stored version), for transcoding. */
export async function findPixelInstance(knex: Knex, sopInstanceUID: string, blobKey: string): Promise<PixelInstanceRow | null> {
  const row = await knex('instances as i')
    .join('series as se', 'se.id', 'i.series_pk')
    .join('studies as st', 'st.id', 'i.study_pk')
    .where({ 'i.sop_instance_uid': sopInstanceUID, 'i.blob_key': blobKey })
    .first([...LOCATION_COLUMNS, knex.raw('jsonb_array_length(i.frames) AS frame_count'), knex.raw(`i.dataset - '52009230' AS dataset`), 'i.frames']);
  if (!row) return null;
  return { ...toLocation(row), dataset: json<DicomJson>(row.dataset), frames: toLocations(row.frames) };
}
