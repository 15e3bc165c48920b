import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { ImagingStudy, ImagingStudySeries, Patient } from '@medplum/fhirtypes';
import { keyedStatement, preparedRaw, singleKeys } from '../../db/prepared-statement';
import { loadFhirDefinitions } from '../definitions';
import { applyWrites, prepareDelete, prepareWrite } from '../store/resource-writer';
import { readCurrent, toStored, type StoredResource } from '../store/resource-store';
import { findResourcesInTransaction, writeResourceInTransaction } from '../write-resource';
import { DCM_SYSTEM, dateTimeOf, genderOf, humanNameOf, issuerSystem } from './dicom-codes';
import { instanceEntry, seriesCodings, studyIdentifiers } from './imaging-study-elements';

/**
 * One truth for DICOM and FHIR, at O(1) cost per study in the ingest transaction: inside the
 * DICOM ingest (or delete) transaction the study gets its ImagingStudy id, its DICOM patient
 * resolves to a FHIR Patient, and the study is marked pending (imaging_study_pending). The
 * ImagingStudy itself (every series and instance) is rewritten from the index later, in a
 * transaction of its own, by src/fhir/dicom/imaging-study-flusher.ts: shortly after the change
 * in the background, and in any case before a FHIR request that could read it, so a FHIR
 * read after the STOW-RS response always sees the stored instances. Many STOWs into one study
 * thus make one ImagingStudy version per rewrite, not one per STOW.
 * DICOM-derived elements are rewritten on every materialization; clinical links added through
 * FHIR (reasonReference, basedOn, note, ...) are kept.
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

/**
 * The synchronous part of the sync, in the index transaction: marks the studies pending (or
 * bumps the mark's generation, so a rewrite that read the index before this change does not
 * clear it), gives each study its ImagingStudy id, resolves patients not linked yet and keeps
 * the Endpoint's address current. One statement when the patients are linked.
 */
export async function markImagingStudiesPending(trx: Knex.Transaction, studyPks: number[], options: ImagingStudySyncOptions): Promise<void> {
  if (studyPks.length === 0) return;
  const pks = [...new Set(studyPks)].sort((a, b) => a - b);
  // PostgreSQL runs data-modifying WITH parts to completion whether or not they are read.
  const rows: PendingMarkRow[] = (
    singleKeys(pks)
      ? await preparedRaw(trx, MARK_PENDING.one, [pks[0], pks[0], DICOMWEB_ENDPOINT_ID, pks[0]])
      : await preparedRaw(trx, MARK_PENDING.many, [pks, pks, DICOMWEB_ENDPOINT_ID, pks])
  ).rows;
  await completePendingMark(trx, rows, options);
}

/** What the mark statement reads for each patient of the marked studies. */
export interface PendingMarkRow {
  patient_pk: number | string;
  patient_linked: boolean;
  endpoint_address: string | null;
}

/** After the mark: writes the Endpoint when its address is not current and resolves the patients not linked to a FHIR Patient. */
export async function completePendingMark(trx: Knex.Transaction, rows: PendingMarkRow[], options: ImagingStudySyncOptions): Promise<void> {
  if (rows.length === 0) return;
  if (rows[0].endpoint_address !== options.dicomwebBaseUrl) await ensureEndpoint(trx, options.dicomwebBaseUrl);
  for (const row of rows) if (!row.patient_linked) await resolvePatient(trx, Number(row.patient_pk));
}

/** The pending row of the studies, or its generation bumped (`{keys}` as in keyedStatement()). */
export const PENDING_MARK_CTE = `marked AS (
     INSERT INTO imaging_study_pending (study_pk) SELECT id FROM studies WHERE id {keys} ORDER BY id
     ON CONFLICT (study_pk) DO UPDATE SET gen = imaging_study_pending.gen + 1
     RETURNING study_pk
   )`;

/**
 * The data-modifying part of the mark (`{keys}` as in keyedStatement()): the pending row (or its
 * generation bumped) and the study's ImagingStudy id; `?` is bound to the study key(s) twice.
 */
export const MARK_PENDING_CTES = `${PENDING_MARK_CTE}, named AS (
     UPDATE studies SET fhir_id = gen_random_uuid()::text WHERE id {keys} AND fhir_id IS NULL RETURNING id
   )`;

/** Whether the patient `p` mirrors a live FHIR Patient, and the Endpoint's address (`?` = its id): the columns of PendingMarkRow. */
export const PENDING_MARK_COLUMNS = `p.id AS patient_pk,
          EXISTS (SELECT 1 FROM fhir_resource r WHERE r.resource_type = 'Patient' AND r.id = p.fhir_id AND NOT r.deleted) AS patient_linked,
          (SELECT r.content->>'address' FROM fhir_resource r WHERE r.resource_type = 'Endpoint' AND r.id = ? AND NOT r.deleted) AS endpoint_address`;

/** The mark, the study ids and what decides whether the Patient and the Endpoint need writing, in one statement (see above). */
const MARK_PENDING = keyedStatement(`WITH ${MARK_PENDING_CTES}
   SELECT DISTINCT ${PENDING_MARK_COLUMNS}
   FROM studies st JOIN patients p ON p.id = st.patient_pk
   WHERE st.id {keys}
   ORDER BY p.id`);

/**
 * Rewrites the ImagingStudy of each study (by primary key) from the index, resolving its
 * Patient when the link is missing. One query reads every study with its patient's link, one
 * more per study reads its series with their instances aggregated (json_agg), so the round
 * trips do not grow with the number of instances. Called by the flusher
 * (imaging-study-flusher.ts), which holds the study's rewrite lock.
 */
export async function materializeImagingStudies(trx: Knex.Transaction, studyPks: number[]): Promise<void> {
  if (studyPks.length === 0) return;
  const studies: StudyRow[] = (
    await trx.raw(
      `SELECT st.id, st.study_uid, st.fhir_id, to_char(st.study_date, 'YYYYMMDD') AS study_date, st.study_time,
              st.accession_number, st.study_description, st.num_series, st.num_instances, st.dataset,
              st.patient_pk, p.fhir_id AS patient_fhir_id,
              EXISTS (SELECT 1 FROM fhir_resource r WHERE r.resource_type = 'Patient' AND r.id = p.fhir_id AND NOT r.deleted) AS patient_linked
       FROM studies st JOIN patients p ON p.id = st.patient_pk
       WHERE st.id = ANY(?::bigint[])
       ORDER BY st.study_uid`,
      [studyPks],
    )
  ).rows;
  const patients = new Map<number, string>();
  for (const study of studies) {
    const patientPk = Number(study.patient_pk);
    let patientId = patients.get(patientPk) ?? (study.patient_linked ? study.patient_fhir_id ?? undefined : undefined);
    if (!patientId) patientId = await resolvePatient(trx, patientPk);
    patients.set(patientPk, patientId);
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
  patient_pk: number;
  patient_fhir_id: string | null;
  patient_linked: boolean;
}

interface SeriesRow {
  id: number;
  series_uid: string;
  series_number: number | null;
  modality: string | null;
  series_description: string | null;
  num_instances: number;
  body_part_examined: string | null;
  laterality: string | null;
  series_date: string | null;
  series_time: string | null;
  /** [SOP Instance UID, SOP Class UID, InstanceNumber, ImageLaterality], in instance order. */
  instances: Array<[string, string, number | null, string | null]> | string | null;
}

/** The series of a study, each with its instances, in one statement. */
async function readSeriesWithInstances(trx: Knex.Transaction, studyPk: number): Promise<SeriesRow[]> {
  const result = await trx.raw(
    `SELECT se.id, se.series_uid, se.series_number, se.modality, se.series_description, se.num_instances,
            se.body_part_examined, se.laterality, to_char(se.series_date, 'YYYYMMDD') AS series_date, se.series_time,
            (SELECT json_agg(json_build_array(i.sop_instance_uid, i.sop_class_uid, i.instance_number, i.image_laterality)
                             ORDER BY i.instance_number ASC NULLS LAST, i.sop_instance_uid)
               FROM instances i WHERE i.series_pk = se.id) AS instances
     FROM series se WHERE se.study_pk = ?
     ORDER BY se.series_number ASC NULLS LAST, se.series_uid`,
    [studyPk],
  );
  return result.rows as SeriesRow[];
}

async function writeImagingStudy(trx: Knex.Transaction, study: StudyRow, patientId: string): Promise<void> {
  const fhirId = study.fhir_id ?? randomUUID();
  const series = await readSeriesWithInstances(trx, Number(study.id));
  const dataset = typeof study.dataset === 'string' ? JSON.parse(study.dataset) : study.dataset;
  const tz = (dataset?.['00080201']?.Value?.[0] as string | undefined) ?? null;
  const modalities = [...new Set(series.map((s) => s.modality).filter((m): m is string => Boolean(m)))].sort();

  const derived: ImagingStudy = {
    resourceType: 'ImagingStudy',
    id: fhirId,
    status: 'available',
    identifier: studyIdentifiers(study.study_uid, study.accession_number),
    subject: { reference: `Patient/${patientId}` },
    endpoint: [{ reference: `Endpoint/${DICOMWEB_ENDPOINT_ID}` }],
    numberOfSeries: Number(study.num_series),
    numberOfInstances: Number(study.num_instances),
    series: series.map((s): ImagingStudySeries => {
      const raw = s.instances ?? [];
      const list = typeof raw === 'string' ? (JSON.parse(raw) as Exclude<SeriesRow['instances'], string | null>) : raw;
      const started = dateTimeOf(s.series_date, s.series_time, tz);
      return {
        uid: s.series_uid,
        ...(s.series_number !== null ? { number: Number(s.series_number) } : {}),
        ...(s.series_description ? { description: s.series_description } : {}),
        numberOfInstances: Number(s.num_instances),
        endpoint: [{ reference: `Endpoint/${DICOMWEB_ENDPOINT_ID}` }],
        ...seriesCodings(s.modality, s.body_part_examined, s.laterality, list.map((i) => i[3])),
        ...(started ? { started } : {}),
        instance: list.map(([uid, sopClass, number]) => instanceEntry(uid, sopClass, number)),
      };
    }),
  };
  const started = dateTimeOf(study.study_date, study.study_time, tz);
  if (started) derived.started = started;
  if (modalities.length) derived.modality = modalities.map((code) => ({ system: DCM_SYSTEM, code }));
  if (study.study_description) derived.description = study.study_description;

  // Keep what clients added through FHIR (reasons, orders, notes, ...).
  const existing = study.fhir_id ? await readClientElements(trx, fhirId) : undefined;
  const kept: Record<string, unknown> = {};
  if (existing && !existing.deleted) {
    for (const [k, v] of Object.entries(existing.content as unknown as Record<string, unknown>)) {
      if (!DERIVED.has(k) && k !== 'resourceType' && k !== 'id' && k !== 'meta') kept[k] = v;
    }
  }
  // Written straight through the resource writer with the row locked above (no second read).
  const write = prepareWrite(loadFhirDefinitions(), { ...kept, ...derived } as ImagingStudy, existing, existing ? 'PUT' : 'POST', new Date());
  await applyWrites(trx, [write]);
  if (!study.fhir_id) await trx('studies').where({ id: study.id }).update({ fhir_id: fhirId });
}

/**
 * The current ImagingStudy row, locked, with only the elements clients own in its content: the
 * derived ones (the series with every instance) are rewritten anyway, so they are not shipped
 * back and parsed on every STOW into a large study.
 */
async function readClientElements(trx: Knex.Transaction, id: string): Promise<StoredResource | undefined> {
  const result = await trx.raw(
    `SELECT rid, resource_type, id, version_id, last_updated, deleted, content - ?::text[] AS content
     FROM fhir_resource WHERE resource_type = 'ImagingStudy' AND id = ? FOR UPDATE`,
    [[...DERIVED], id],
  );
  return result.rows[0] ? toStored(result.rows[0]) : undefined;
}

/** The ImagingStudy id of a study, for links in responses. */
export async function imagingStudyIdOf(knex: Knex, studyInstanceUID: string): Promise<string | undefined> {
  const row = await knex('studies').where({ study_uid: studyInstanceUID }).first('fhir_id');
  return row?.fhir_id ?? undefined;
}

/**
 * The index-change hook the app installs on STOW and delete: removed studies lose their
 * ImagingStudy (a FHIR delete, history kept) at once; changed ones are marked for a rewrite
 * (markImagingStudiesPending), which the flusher does before any FHIR request can read them.
 */
export async function syncFhirFromIndex(
  trx: Knex.Transaction,
  change: { studyPks: number[]; removedStudies: Array<{ id: number; fhirId: string | null }> },
  context: ImagingStudySyncOptions,
): Promise<void> {
  await deleteImagingStudies(trx, change.removedStudies.map((s) => s.fhirId).filter((id): id is string => Boolean(id)));
  await markImagingStudiesPending(trx, change.studyPks, context);
}
