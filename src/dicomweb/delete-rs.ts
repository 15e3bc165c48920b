/**
 * Delete of studies, series and instances. PS3.18 defines no delete transaction; this follows
 * the convention of dcm4chee-arc, Orthanc and Google Cloud Healthcare: `DELETE` on the resource
 * URI, 204 No Content on success, 404 when absent. Index rows (with superseded versions) go in
 * one transaction; blobs are left to the orphan sweeper, which removes bytes no row references
 * once the grace period (ORPHAN_GRACE_SECONDS, counted from the delete) has passed.
 */
import type { Knex } from 'knex';
import { deleteIndexedInstances, type DeleteOutcome } from '../db/delete-index';
import { targetExists } from '../db/rendered-index';
import type { RetrieveTarget, StudyRestriction } from '../db/wado-index';
import { HttpError } from '../http/errors';
import { notFound, type WadoServices } from './wado-rs';

/**
 * How the caller's granular delete scopes narrow a delete (src/auth/dicom-write-scopes.ts): the
 * studies it may delete from, and the answer for a target it may read but not delete.
 */
export interface DeleteScope {
  /** The studies the delete may remove from (in place of `restrictStudies`); undefined: all. */
  reach: StudyRestriction | undefined;
  /** The studies the caller may read: a target among them outside `reach` is refused, any other is not found. Undefined: all. */
  readable: StudyRestriction | undefined;
  /** The refusal (403) of a readable target outside `reach`. */
  refusal: { message: string; headers: Record<string, string> };
}

/** One delete request: the target and the row-level filter (filtered-out targets answer 404). */
export interface DeleteRequest {
  restrictStudies?: StudyRestriction;
  /** Set when granular scopes narrow the delete; undefined (the common case) checks nothing more. */
  scope?: DeleteScope;
  /** Base of this server's DICOMweb URLs (the ImagingStudy endpoint of what remains). */
  dicomwebBaseUrl?: string;
  /** Writes the request's AuditEvent in the delete's transaction: nothing is deleted unaudited. */
  audit?: (trx: Knex.Transaction) => Promise<void>;
}

/** Deletes a study and everything in it. */
export function deleteStudy(services: Pick<WadoServices, 'db' | 'logger' | 'onIndexChange'>, req: DeleteRequest & { studyInstanceUID: string }): Promise<DeleteOutcome> {
  return deleteTarget(services, req, { studyInstanceUID: req.studyInstanceUID });
}

/** Deletes a series; the study goes too when it is left empty. */
export function deleteSeries(
  services: Pick<WadoServices, 'db' | 'logger' | 'onIndexChange'>,
  req: DeleteRequest & { studyInstanceUID: string; seriesInstanceUID: string },
): Promise<DeleteOutcome> {
  return deleteTarget(services, req, { studyInstanceUID: req.studyInstanceUID, seriesInstanceUID: req.seriesInstanceUID });
}

/** Deletes one instance; its series and study go too when left empty. */
export function deleteInstance(services: Pick<WadoServices, 'db' | 'logger' | 'onIndexChange'>, req: DeleteRequest & Required<RetrieveTarget>): Promise<DeleteOutcome> {
  return deleteTarget(services, req, {
    studyInstanceUID: req.studyInstanceUID,
    seriesInstanceUID: req.seriesInstanceUID,
    sopInstanceUID: req.sopInstanceUID,
  });
}

async function deleteTarget(services: Pick<WadoServices, 'db' | 'logger' | 'onIndexChange'>, req: DeleteRequest, target: RetrieveTarget): Promise<DeleteOutcome> {
  const onChange = services.onIndexChange;
  const audit = req.audit;
  const scope = req.scope;
  const outcome = await deleteIndexedInstances(
    services.db.knex,
    target,
    scope ? scope.reach : req.restrictStudies,
    onChange || audit
      ? async (trx, change) => {
          if (onChange) await onChange(trx, change, { dicomwebBaseUrl: req.dicomwebBaseUrl ?? '' });
          if (audit) await audit(trx);
        }
      : undefined,
  );
  if (!outcome) {
    if (!scope) throw await notFound(services.db.knex, target, req.restrictStudies);
    // Outside the scopes' reach: refused when the caller may see the target, else as missing as any unseen study.
    if (await targetExists(services.db.knex, target, scope.readable)) throw new HttpError(403, scope.refusal.message, scope.refusal.headers);
    throw await notFound(services.db.knex, target, scope.readable);
  }
  services.logger.info({ target, instances: outcome.instances, versions: outcome.versions }, 'deleted from the index');
  return outcome;
}
