import type { Knex } from 'knex';
import { isValidUid } from '../dicom/validate-instance';
import { fhirError, notFound } from '../fhir/outcome';
import type { PrivacyService } from '../privacy/privacy-types';
import type { Administrator } from './project-admin';

/**
 * Which projects hold a stored study (many to many: its files are stored once). A data manager
 * adds a study it can already see (one of its projects holds it) to another of its projects, or
 * takes it out of one; an admin does so for any study. Linking a study links its ImagingStudy
 * and its Patient, and records the study's de-identified UIDs for the project (researchers
 * address it by them), in one transaction, as a STOW into the project would.
 */

/** The caller, with every project it holds (the path's project is only one of them). */
export interface StudyLinker extends Administrator {
  /** All the caller's projects, from its token; 'all' for an admin. */
  memberOf: readonly string[] | 'all';
}

interface StudyRow {
  id: string | number;
  study_fhir_id: string | null;
  patient_pk: string | number;
  patient_fhir_id: string | null;
}

/** Links a study to a project; resolves true when the link is new. 404 for a study the caller cannot see, as for none. */
export async function linkStudy(knex: Knex, privacy: PrivacyService | undefined, actor: StudyLinker, project: string, studyUid: string): Promise<boolean> {
  checkUid(studyUid);
  return knex.transaction(async (trx) => {
    if (!(await trx('projects').where({ id: project }).first('id'))) throw notFound(`No project ${project}`);
    const study = await visibleStudy(trx, actor, studyUid);
    const inserted = await trx('project_studies').insert({ project_id: project, study_pk: study.id }).onConflict(['project_id', 'study_pk']).ignore().returning('study_pk');
    const links = [
      ...(study.study_fhir_id ? [{ resource_type: 'ImagingStudy', resource_id: study.study_fhir_id }] : []),
      ...(study.patient_fhir_id ? [{ resource_type: 'Patient', resource_id: study.patient_fhir_id }] : []),
    ];
    if (links.length > 0) {
      await trx('project_resources')
        .insert(links.map((l) => ({ project_id: project, ...l })))
        .onConflict(['project_id', 'resource_type', 'resource_id'])
        .ignore();
    }
    await privacy?.recordStudyUids(trx, [Number(study.id)], [project]);
    return inserted.length > 0;
  });
}

/**
 * Takes a study out of a project: the study's link and its ImagingStudy's; the Patient's too
 * when no other study of that patient stays in the project. The files and the other projects'
 * links stay. 404 when the project does not hold the study.
 */
export async function unlinkStudy(knex: Knex, project: string, studyUid: string): Promise<void> {
  checkUid(studyUid);
  await knex.transaction(async (trx) => {
    const study = (await trx('studies as st')
      .join('project_studies as ps', 'ps.study_pk', 'st.id')
      .join('patients as p', 'p.id', 'st.patient_pk')
      .where({ 'st.study_uid': studyUid, 'ps.project_id': project })
      .forUpdate()
      .first('st.id', 'st.fhir_id as study_fhir_id', 'st.patient_pk', 'p.fhir_id as patient_fhir_id')) as StudyRow | undefined;
    if (!study) throw notFound(`Project ${project} holds no study ${studyUid}`);
    await trx('project_studies').where({ project_id: project, study_pk: study.id }).delete();
    if (study.study_fhir_id) await trx('project_resources').where({ project_id: project, resource_type: 'ImagingStudy', resource_id: study.study_fhir_id }).delete();
    const siblings = await trx('studies as st')
      .join('project_studies as ps', 'ps.study_pk', 'st.id')
      .where({ 'st.patient_pk': study.patient_pk, 'ps.project_id': project })
      .first('st.id');
    if (!siblings && study.patient_fhir_id) await trx('project_resources').where({ project_id: project, resource_type: 'Patient', resource_id: study.patient_fhir_id }).delete();
  });
}

/** The study, when the caller may see it: an admin any, anyone else one a project of theirs holds. */
async function visibleStudy(trx: Knex.Transaction, actor: StudyLinker, studyUid: string): Promise<StudyRow> {
  const q = trx('studies as st').join('patients as p', 'p.id', 'st.patient_pk').where('st.study_uid', studyUid);
  if (actor.memberOf !== 'all') {
    const held = [...actor.memberOf];
    q.whereExists(function linked(this: Knex.QueryBuilder) {
      this.select(trx.raw('1')).from('project_studies as ps').whereRaw('ps.study_pk = st.id').whereIn('ps.project_id', held);
    });
  }
  const row = (await q.forUpdate('st').first('st.id', 'st.fhir_id as study_fhir_id', 'st.patient_pk', 'p.fhir_id as patient_fhir_id')) as StudyRow | undefined;
  if (!row) throw notFound(`No study ${studyUid}`);
  return row;
}

function checkUid(uid: string): void {
  if (!isValidUid(uid)) throw fhirError(400, 'invalid', 'study: a Study Instance UID (digits and dots, at most 64 characters) is required');
}
