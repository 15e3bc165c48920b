import type { Knex } from 'knex';
import { linkStowToProjects } from '../auth/request-access';
import type { AlongsideQuery, IndexChange } from '../db/instance-index';
import { preparedRaw } from '../db/prepared-statement';
import type { ImagingStudyFlusher } from '../fhir/dicom/imaging-study-flusher';
import {
  completePendingMark,
  DICOMWEB_ENDPOINT_ID,
  MARK_PENDING_CTES,
  PENDING_MARK_CTE,
  PENDING_MARK_COLUMNS,
  syncFhirFromIndex,
  type PendingMarkRow,
} from '../fhir/dicom/imaging-study-sync';
import { STUDY_UID_RECORDED_SQL, type StudyLink } from '../privacy/deid-uids';
import { LINK_KEYED_SQL } from '../privacy/patient-keys';
import type { AppPrivacyService } from '../privacy/privacy-service';
import type { IndexChangeContext, IndexChangeHook } from './index-change-hook';

/**
 * The work every index change (STOW, delete) does in its transaction, in this order: the FHIR
 * ImagingStudy mark and Patient link (src/fhir/dicom/imaging-study-sync.ts), the PatientKeys
 * (src/privacy/patient-keys.ts), the project links of a STOW (src/auth/request-access.ts), the
 * de-identified UIDs of linked studies (src/privacy/deid-uids.ts), then a background rewrite of
 * the ImagingStudy once it commits.
 *
 * The common case, one study changed by a request that links no project (a single-instance STOW
 * into a study, or an admin's), makes the first statement of each step in one round trip
 * (FOLLOW_UP): the mark, the FHIR Patient link to the patient's key, and what the steps read to
 * decide whether anything more is needed (an unlinked Patient, a patient without a key, a new
 * Endpoint address, the study's project links). Only then do the steps run their own statements.
 */
export function createIndexChangeSync(deps: { privacy: AppPrivacyService; imagingStudies: ImagingStudyFlusher }): IndexChangeHook {
  const { privacy, imagingStudies } = deps;
  const hook: IndexChangeHook = async (trx, change, context) => {
    if (isSingleStudyWithoutProjects(change, context)) {
      await followUpOneStudy(trx, change, context, privacy);
    } else {
      await syncFhirFromIndex(trx, change, context);
      await privacy.assignPatientKeysForChange(trx, change);
      await linkStowToProjects(trx, change, context);
      await privacy.recordDeidUidsForChange(trx, change);
    }
    imagingStudies.noteChange(trx);
  };
  // A STOW that links no project can have the first statement of each step run by the index's
  // insert statement (the study is named for FHIR there, as `named` would).
  hook.alongsideFor = (context) => (withoutProjects(context) ? ALONGSIDE : undefined);
  return hook;
}

function withoutProjects(context: IndexChangeContext): boolean {
  return (context.projects ?? []).length === 0 && context.studyScope !== 'projects';
}

/** One study changed, none removed, no project to link or to check the study against (linkStowToProjects does nothing). */
function isSingleStudyWithoutProjects(change: IndexChange, context: IndexChangeContext): boolean {
  return change.studyPks.length === 1 && change.removedStudies.length === 0 && withoutProjects(context);
}

interface FollowUpRow extends PendingMarkRow {
  /** The patient had no PatientKey (so LINK_KEYED linked nothing). */
  unkeyed: boolean;
  links: StudyLink[] | string;
}

/**
 * The first statement of each step, for one study (bound: the study key three times, the
 * Endpoint id, the study key). The FHIR Patient is linked to the patient's key only if the
 * patient mirrors a live Patient already: otherwise the mark step resolves (or creates) the
 * Patient first, and the key step runs in full after it, as in the sequential order.
 */
function linkKeyedCte(key: string): string {
  return `linked AS (${LINK_KEYED_SQL.replace(
    '{keys}',
    `${key} AND EXISTS (SELECT 1 FROM fhir_resource r WHERE r.resource_type = 'Patient' AND r.id = p.fhir_id AND NOT r.deleted)`,
  )})`;
}
const LINK_KEYED_CTE = linkKeyedCte('= ?::bigint');

function followUpSelect(key: string): string {
  return `SELECT ${PENDING_MARK_COLUMNS},
       p.patient_key_id IS NULL AS unkeyed,
       (SELECT coalesce(json_agg(json_build_object('id', st.id, 'study_uid', st.study_uid, 'project_id', ps.project_id, 'recorded', ${STUDY_UID_RECORDED_SQL})), '[]')
          FROM project_studies ps WHERE ps.study_pk = st.id) AS links
FROM studies st JOIN patients p ON p.id = st.patient_pk
WHERE st.id ${key}`;
}
const FOLLOW_UP_SELECT = followUpSelect('= ?::bigint');

const FOLLOW_UP = `WITH ${MARK_PENDING_CTES.replaceAll('{keys}', '= ?::bigint')},
  ${LINK_KEYED_CTE}
${FOLLOW_UP_SELECT}`;

/** FOLLOW_UP without naming the study (the insert statement does), to run alongside the insert. */
const ALONGSIDE: AlongsideQuery = {
  ctes: `,\n  ${PENDING_MARK_CTE.replaceAll('{keys}', '= ?::bigint')},\n  ${LINK_KEYED_CTE}`,
  select: FOLLOW_UP_SELECT,
  bindings: (pk) => [pk, pk, DICOMWEB_ENDPOINT_ID, pk],
  overKey: (key) => ({
    ctes: `,\n  ${PENDING_MARK_CTE.replaceAll('{keys}', `= ${key}`)},\n  ${linkKeyedCte(`= ${key}`)}`,
    select: followUpSelect(`= ${key}`),
    bindings: [DICOMWEB_ENDPOINT_ID],
  }),
};

async function followUpOneStudy(trx: Knex.Transaction, change: IndexChange, context: IndexChangeContext, privacy: AppPrivacyService): Promise<void> {
  const pk = change.studyPks[0];
  // The insert statement read it already (ALONGSIDE), unless the change took another path.
  const rows = change.alongside?.patient_pk != null ? [change.alongside as unknown as FollowUpRow] : ((await preparedRaw(trx, FOLLOW_UP, [pk, pk, pk, DICOMWEB_ENDPOINT_ID, pk])).rows as FollowUpRow[]);
  await completePendingMark(trx, rows, context);
  const row = rows[0];
  if (!row) return;
  // An unlinked Patient was resolved just now: link it to the key (and give the patient one) as the key step does.
  if (!row.patient_linked) await privacy.assignPatientKeysForChange(trx, change);
  else if (row.unkeyed) await privacy.assignPatientKeysForChange(trx, change, 1);
  const links = typeof row.links === 'string' ? (JSON.parse(row.links) as StudyLink[]) : row.links;
  if (links.length > 0) await privacy.recordDeidUidsForChange(trx, change, links);
}
