import type { Knex } from 'knex';
import type { ScannedInstance } from '../dicom/types';
import { withTransaction } from './database';
import { pickSeriesAttributes, pickStudyAttributes, stripNul } from './level-attributes';
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
 * the STOW response is sent. Rows are locked in a fixed order (study, series, instance UID)
 * so concurrent requests over the same studies cannot deadlock each other.
 */
export async function indexInstances(knex: Knex, items: InstanceToIndex[], onChange?: OnIndexChange): Promise<IndexOutcome[]> {
  const order = items
    .map((item, i) => ({ item, i }))
    .sort((a, b) => compareKeys(a.item, b.item) || a.item.order - b.item.order);
  return withTransaction(knex, async (trx) => {
    const outcomes: IndexOutcome[] = new Array(items.length);
    const patientPks = new Map<string, number>();
    const studyPks = new Map<string, number>();
    const seriesPks = new Map<string, number>();
    const touchedStudies = new Set<number>();
    const touchedSeries = new Set<number>();
    for (const { item, i } of order) {
      const a = item.scanned.attributes;
      const identity = patientIdentity(item.scanned);
      let patientPk = patientPks.get(identity);
      if (patientPk === undefined) {
        patientPk = await upsertPatient(trx, identity, item.scanned);
        patientPks.set(identity, patientPk);
      }
      let studyPk = studyPks.get(a.studyInstanceUID);
      if (studyPk === undefined) {
        studyPk = await upsertStudy(trx, patientPk, item.scanned);
        studyPks.set(a.studyInstanceUID, studyPk);
      }
      let seriesPk = seriesPks.get(a.seriesInstanceUID);
      if (seriesPk === undefined) {
        seriesPk = await upsertSeries(trx, studyPk, item.scanned);
        seriesPks.set(a.seriesInstanceUID, seriesPk);
      }
      touchedStudies.add(studyPk);
      touchedSeries.add(seriesPk);
      const result = await upsertInstance(trx, studyPk, seriesPk, item);
      if (result.movedFrom) {
        touchedStudies.add(result.movedFrom.studyPk);
        touchedSeries.add(result.movedFrom.seriesPk);
      }
      outcomes[i] = result.outcome;
    }
    const removedStudies = await refreshAggregates(trx, [...touchedSeries], [...touchedStudies]);
    if (onChange) {
      const removed = new Set(removedStudies.map((r) => r.id));
      await onChange(trx, { studyPks: [...touchedStudies].filter((pk) => !removed.has(pk)), removedStudies });
    }
    return outcomes;
  });
}

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

async function upsertPatient(trx: Knex.Transaction, identity: string, scanned: ScannedInstance): Promise<number> {
  const a = scanned.attributes;
  const row = {
    identity_key: identity,
    patient_id: textOrNull(a.patientID),
    issuer_of_patient_id: textOrNull(a.issuerOfPatientID),
    patient_name: textOrNull(a.patientName),
    birth_date: toSqlDate(a.patientBirthDate),
    sex: textOrNull(a.patientSex),
  };
  const [r] = await trx('patients')
    .insert(row)
    .onConflict('identity_key')
    .merge({
      patient_name: trx.raw('coalesce(excluded.patient_name, patients.patient_name)'),
      birth_date: trx.raw('coalesce(excluded.birth_date, patients.birth_date)'),
      sex: trx.raw('coalesce(excluded.sex, patients.sex)'),
      updated_at: trx.fn.now(),
    })
    .returning('id');
  return Number(r.id);
}

async function upsertStudy(trx: Knex.Transaction, patientPk: number, scanned: ScannedInstance): Promise<number> {
  const a = scanned.attributes;
  const row = {
    study_uid: a.studyInstanceUID,
    patient_pk: patientPk,
    patient_id: textOrNull(a.patientID),
    issuer_of_patient_id: textOrNull(a.issuerOfPatientID),
    patient_name: textOrNull(a.patientName),
    patient_name_norm: normalizePersonName(a.patientName),
    patient_birth_date: toSqlDate(a.patientBirthDate),
    patient_sex: textOrNull(a.patientSex),
    study_date: toSqlDate(a.studyDate),
    study_time: textOrNull(a.studyTime),
    accession_number: textOrNull(a.accessionNumber),
    study_id: textOrNull(a.studyID),
    study_description: textOrNull(a.studyDescription),
    referring_physician_name: textOrNull(a.referringPhysicianName),
    institution_name: textOrNull(a.institutionName),
    dataset: JSON.stringify(stripNul(pickStudyAttributes(scanned.dataset))),
  };
  const { study_uid: _uid, ...updates } = row;
  const [r] = await trx('studies')
    .insert(row)
    .onConflict('study_uid')
    .merge({ ...updates, updated_at: trx.fn.now() })
    .returning('id');
  return Number(r.id);
}

async function upsertSeries(trx: Knex.Transaction, studyPk: number, scanned: ScannedInstance): Promise<number> {
  const a = scanned.attributes;
  const row = {
    series_uid: a.seriesInstanceUID,
    study_pk: studyPk,
    modality: textOrNull(a.modality),
    series_number: intOrNull(a.seriesNumber),
    series_description: textOrNull(a.seriesDescription),
    series_date: toSqlDate(a.seriesDate),
    series_time: textOrNull(a.seriesTime),
    body_part_examined: textOrNull(a.bodyPartExamined),
    laterality: textOrNull(a.laterality),
    manufacturer: textOrNull(a.manufacturer),
    manufacturer_model_name: textOrNull(a.manufacturerModelName),
    station_name: textOrNull(a.stationName),
    device_type_codes: a.acquisitionDeviceTypeCodes.map((c) => c.replace(/\u0000/g, '')),
    pps_start_date: toSqlDate(a.performedProcedureStepStartDate),
    pps_start_time: textOrNull(a.performedProcedureStepStartTime),
    dataset: JSON.stringify(stripNul(pickSeriesAttributes(scanned.dataset))),
  };
  const { series_uid: _uid, ...updates } = row;
  const [r] = await trx('series')
    .insert(row)
    .onConflict('series_uid')
    .merge({ ...updates, updated_at: trx.fn.now() })
    .returning('id');
  return Number(r.id);
}

interface InstanceWrite {
  outcome: IndexOutcome;
  movedFrom?: { studyPk: number; seriesPk: number };
}

async function upsertInstance(
  trx: Knex.Transaction,
  studyPk: number,
  seriesPk: number,
  item: InstanceToIndex,
): Promise<InstanceWrite> {
  const s = item.scanned;
  const a = s.attributes;
  const row = {
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
    frames: JSON.stringify(s.frames),
    dataset: JSON.stringify(stripNul(s.dataset)),
  };
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
 * levels; returns the studies it removed.
 */
export async function refreshAggregates(
  trx: Knex.Transaction,
  seriesPks: number[],
  studyPks: number[],
): Promise<Array<{ id: number; fhirId: string | null }>> {
  if (seriesPks.length > 0) {
    await trx.raw(
      `UPDATE series s SET num_instances = (SELECT count(*) FROM instances i WHERE i.series_pk = s.id), updated_at = now()
       WHERE s.id = ANY(?::bigint[])`,
      [seriesPks],
    );
    await trx.raw(`DELETE FROM series s WHERE s.id = ANY(?::bigint[]) AND s.num_instances = 0`, [seriesPks]);
  }
  if (studyPks.length > 0) {
    await trx.raw(
      `UPDATE studies st SET
         num_series = (SELECT count(*) FROM series se WHERE se.study_pk = st.id),
         num_instances = (SELECT count(*) FROM instances i WHERE i.study_pk = st.id),
         modalities = coalesce((SELECT array_agg(DISTINCT se.modality ORDER BY se.modality) FROM series se
                                 WHERE se.study_pk = st.id AND se.modality IS NOT NULL), '{}'),
         sop_classes = coalesce((SELECT array_agg(DISTINCT i.sop_class_uid ORDER BY i.sop_class_uid) FROM instances i
                                  WHERE i.study_pk = st.id), '{}'),
         updated_at = now()
       WHERE st.id = ANY(?::bigint[])`,
      [studyPks],
    );
    const removed = await trx.raw(`DELETE FROM studies st WHERE st.id = ANY(?::bigint[]) AND st.num_instances = 0 RETURNING st.id, st.fhir_id`, [
      studyPks,
    ]);
    return (removed.rows as Array<{ id: string; fhir_id: string | null }>).map((r) => ({ id: Number(r.id), fhirId: r.fhir_id }));
  }
  return [];
}
