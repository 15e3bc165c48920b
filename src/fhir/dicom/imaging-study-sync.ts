import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { ImagingStudy, ImagingStudySeries, Patient } from '@medplum/fhirtypes';
import { applyWrites, prepareDelete } from '../store/resource-writer';
import { readCurrent } from '../store/resource-store';
import { findResourcesInTransaction, writeResourceInTransaction } from '../write-resource';
import { DCM_SYSTEM, DICOM_UID_SYSTEM, dateTimeOf, genderOf, humanNameOf, issuerSystem, lateralityCoding } from './dicom-codes';

/**
 * One truth for DICOM and FHIR: inside the DICOM ingest (or delete) transaction, the Patient a
 * study's DICOM patient resolves to and the ImagingStudy mirroring the study are written from
 * the index rows, so an ImagingStudy exists the moment the STOW-RS response is sent.
 * DICOM-derived elements are rewritten on every sync; clinical links added through FHIR
 * (reasonReference, basedOn, note, ...) are kept.
 */

/** Where ImagingStudy.endpoint points: the DICOMweb base URL of this server. */
export interface ImagingStudySyncOptions {
  dicomwebBaseUrl: string;
}

/** Elements of ImagingStudy that come from DICOM; everything else on the resource is the client's. */
const DERIVED = new Set([
  'status',
  'identifier',
  'subject',
  'started',
  'modality',
  'numberOfSeries',
  'numberOfInstances',
  'description',
  'endpoint',
  'series',
]);

export const DICOMWEB_ENDPOINT_ID = 'dicomweb';

/** Rewrites the Patient and ImagingStudy of each study (by primary key); removes ImagingStudy of studies gone from the index. */
export async function syncImagingStudies(trx: Knex.Transaction, studyPks: number[], options: ImagingStudySyncOptions): Promise<void> {
  if (studyPks.length === 0) return;
  await ensureEndpoint(trx, options.dicomwebBaseUrl);
  const studies = await trx('studies as st')
    .join('patients as p', 'p.id', 'st.patient_pk')
    .whereIn('st.id', studyPks)
    .orderBy('st.study_uid')
    .select(
      'st.id',
      'st.study_uid',
      'st.fhir_id',
      trx.raw(`to_char(st.study_date, 'YYYYMMDD') as study_date`),
      'st.study_time',
      'st.accession_number',
      'st.study_description',
      'st.num_series',
      'st.num_instances',
      'st.dataset',
      'p.id as patient_pk',
    );
  for (const study of studies) {
    const patientId = await resolvePatient(trx, Number(study.patient_pk));
    await writeImagingStudy(trx, study, patientId);
  }
}

/** Marks the ImagingStudy resources of studies about to be removed from the index as deleted (FHIR delete, history kept). */
export async function deleteImagingStudies(trx: Knex.Transaction, fhirIds: string[]): Promise<void> {
  const now = new Date();
  for (const id of fhirIds) {
    const existing = await readCurrent(trx, 'ImagingStudy', id, { forUpdate: true });
    if (existing && !existing.deleted) await applyWrites(trx, [prepareDelete(existing, now)]);
  }
}

async function ensureEndpoint(trx: Knex.Transaction, address: string): Promise<void> {
  const current = await readCurrent(trx, 'Endpoint', DICOMWEB_ENDPOINT_ID);
  const content = current?.content as { address?: string } | undefined;
  if (current && !current.deleted && content?.address === address) return;
  await writeResourceInTransaction(
    trx,
    {
      resourceType: 'Endpoint',
      id: DICOMWEB_ENDPOINT_ID,
      status: 'active',
      name: 'imaging-lake DICOMweb',
      connectionType: { system: 'http://terminology.hl7.org/CodeSystem/endpoint-connection-type', code: 'dicom-wado-rs' },
      payloadType: [{ coding: [{ system: 'http://hl7.org/fhir/endpoint-payload-type', code: 'DICOM' }] }],
      payloadMimeType: ['application/dicom'],
      address,
    },
    { validate: false },
  );
}

/** The FHIR Patient of an index patient: linked before, else found by identifier, else created. */
async function resolvePatient(trx: Knex.Transaction, patientPk: number): Promise<string> {
  const p = await trx('patients')
    .where({ id: patientPk })
    .first('id', 'fhir_id', 'patient_id', 'issuer_of_patient_id', 'patient_name', trx.raw(`to_char(birth_date, 'YYYY-MM-DD') as birth_date`), 'sex');
  if (p.fhir_id) {
    const linked = await readCurrent(trx, 'Patient', p.fhir_id);
    if (linked && !linked.deleted) return p.fhir_id;
  }
  const system = issuerSystem(p.issuer_of_patient_id);
  let id: string | undefined;
  if (p.patient_id) {
    const found = await findResourcesInTransaction(trx, 'Patient', `identifier=${encodeURIComponent(system)}|${encodeURIComponent(p.patient_id)}`, 2);
    if (found.length >= 1) id = found[0].id;
  }
  if (!id) {
    const patient: Patient = { resourceType: 'Patient', id: randomUUID(), active: true };
    if (p.patient_id) {
      patient.identifier = [
        {
          use: 'usual',
          type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] },
          system,
          value: p.patient_id,
          ...(p.issuer_of_patient_id ? { assigner: { display: p.issuer_of_patient_id } } : {}),
        },
      ];
    }
    const name = humanNameOf(p.patient_name);
    if (name) patient.name = [name];
    if (p.birth_date) patient.birthDate = p.birth_date;
    const gender = genderOf(p.sex);
    if (gender) patient.gender = gender;
    id = (await writeResourceInTransaction(trx, patient, { validate: false })).resource.id!;
  }
  await trx('patients').where({ id: patientPk }).update({ fhir_id: id });
  return id;
}

interface StudyRow {
  id: number;
  study_uid: string;
  fhir_id: string | null;
  study_date: string | null;
  study_time: string | null;
  accession_number: string | null;
  study_description: string | null;
  num_series: number;
  num_instances: number;
  dataset: Record<string, { Value?: unknown[] }> | string;
}

async function writeImagingStudy(trx: Knex.Transaction, study: StudyRow, patientId: string): Promise<void> {
  const fhirId = study.fhir_id ?? randomUUID();
  const series = await trx('series')
    .where({ study_pk: study.id })
    .orderBy([{ column: 'series_number', order: 'asc', nulls: 'last' } as never, 'series_uid'])
    .select('id', 'series_uid', 'series_number', 'modality', 'series_description', 'num_instances', 'body_part_examined', 'laterality', trx.raw(`to_char(series_date, 'YYYYMMDD') as series_date`), 'series_time');
  const instances = await trx('instances')
    .where({ study_pk: study.id })
    .orderBy([{ column: 'instance_number', order: 'asc', nulls: 'last' } as never, 'sop_instance_uid'])
    .select('series_pk', 'sop_instance_uid', 'sop_class_uid', 'instance_number', 'image_laterality');
  const bySeries = new Map<number, typeof instances>();
  for (const i of instances) {
    const list = bySeries.get(Number(i.series_pk)) ?? [];
    list.push(i);
    bySeries.set(Number(i.series_pk), list);
  }
  const dataset = typeof study.dataset === 'string' ? JSON.parse(study.dataset) : study.dataset;
  const tz = (dataset?.['00080201']?.Value?.[0] as string | undefined) ?? null;
  const modalities = [...new Set(series.map((s) => s.modality).filter(Boolean))].sort();

  const derived: ImagingStudy = {
    resourceType: 'ImagingStudy',
    id: fhirId,
    status: 'available',
    identifier: [
      { use: 'official', system: DICOM_UID_SYSTEM, value: `urn:oid:${study.study_uid}` },
      ...(study.accession_number
        ? [{ type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'ACSN' }] }, value: study.accession_number }]
        : []),
    ],
    subject: { reference: `Patient/${patientId}` },
    endpoint: [{ reference: `Endpoint/${DICOMWEB_ENDPOINT_ID}` }],
    numberOfSeries: Number(study.num_series),
    numberOfInstances: Number(study.num_instances),
    series: series.map((s): ImagingStudySeries => {
      const list = bySeries.get(Number(s.id)) ?? [];
      // Series laterality from (0020,0060), else the instances' ImageLaterality when they agree.
      const imageLats = [...new Set(list.map((i) => i.image_laterality).filter((v) => v === 'R' || v === 'L' || v === 'B'))];
      const laterality = lateralityCoding(s.laterality) ?? (imageLats.length === 1 ? lateralityCoding(imageLats[0]) : undefined);
      const started = dateTimeOf(s.series_date, s.series_time, tz);
      return {
        uid: s.series_uid,
        ...(s.series_number !== null ? { number: Number(s.series_number) } : {}),
        modality: { system: DCM_SYSTEM, code: s.modality ?? 'OT' },
        ...(s.series_description ? { description: s.series_description } : {}),
        numberOfInstances: Number(s.num_instances),
        endpoint: [{ reference: `Endpoint/${DICOMWEB_ENDPOINT_ID}` }],
        ...(s.body_part_examined ? { bodySite: { display: s.body_part_examined } } : {}),
        ...(laterality ? { laterality } : {}),
        ...(started ? { started } : {}),
        instance: list.map((i) => ({
          uid: i.sop_instance_uid,
          sopClass: { system: 'urn:ietf:rfc:3986', code: `urn:oid:${i.sop_class_uid}` },
          ...(i.instance_number !== null ? { number: Number(i.instance_number) } : {}),
        })),
      };
    }),
  };
  const started = dateTimeOf(study.study_date, study.study_time, tz);
  if (started) derived.started = started;
  if (modalities.length) derived.modality = modalities.map((code) => ({ system: DCM_SYSTEM, code }));
  if (study.study_description) derived.description = study.study_description;

  // Keep what clients added through FHIR (reasons, orders, notes, ...).
  const existing = study.fhir_id ? await readCurrent(trx, 'ImagingStudy', fhirId, { forUpdate: true }) : undefined;
  const kept: Record<string, unknown> = {};
  if (existing && !existing.deleted) {
    for (const [k, v] of Object.entries(existing.content as unknown as Record<string, unknown>)) {
      if (!DERIVED.has(k) && k !== 'resourceType' && k !== 'id' && k !== 'meta') kept[k] = v;
    }
  }
  await writeResourceInTransaction(trx, { ...kept, ...derived } as ImagingStudy, { validate: false });
  if (!study.fhir_id) await trx('studies').where({ id: study.id }).update({ fhir_id: fhirId });
}

/** The ImagingStudy id of a study, for links in responses. */
export async function imagingStudyIdOf(knex: Knex, studyInstanceUID: string): Promise<string | undefined> {
  const row = await knex('studies').where({ study_uid: studyInstanceUID }).first('fhir_id');
  return row?.fhir_id ?? undefined;
}

/**
 * The index-change hook the app installs on STOW and delete: removed studies lose their
 * ImagingStudy (a FHIR delete, history kept), changed ones get theirs rewritten.
 */
export async function syncFhirFromIndex(
  trx: Knex.Transaction,
  change: { studyPks: number[]; removedStudies: Array<{ id: number; fhirId: string | null }> },
  context: ImagingStudySyncOptions,
): Promise<void> {
  await deleteImagingStudies(trx, change.removedStudies.map((s) => s.fhirId).filter((id): id is string => Boolean(id)));
  await syncImagingStudies(trx, change.studyPks, context);
}
