/**
 * The WADO-URI route (PS3.18 chapter 9, URI Service): `GET /wado?requestType=WADO&studyUID=...`.
 * It parses the query, resolves a researcher's de-identified UIDs, calls retrieveWadoUriObject
 * and streams the answer; errors go to the DICOMweb error handler of the router. Access is the
 * WADO-RS instance retrieve's: an ImagingStudy read of `studyUID` (src/auth/policy-routes.ts),
 * the same row filter, views and AuditEvent (DICOM 110104).
 */
import type { Request, Response, Router } from 'express';
import type { StudyRestriction } from '../db/wado-index';
import { resolveResearcherTarget } from './deid-wado';
import type { DeidView } from './deid-view';
import type { IdentifierMask } from './identifier-mask';
import { sendPrepared } from './prepared-answer';
import { retrieveWadoUriObject, type WadoUriServices } from './wado-uri';
import { parseWadoUriQuery } from './wado-uri-params';
import { wadoUriStudyUids } from '../auth/policy-routes';

/** The path of the URI Service under /dicomweb. */
export const WADO_URI_PATH = '/wado';

/** Registers `GET /wado` (and HEAD) on the DICOMweb router, after the middleware that sets the views. */
export function registerWadoUriRoutes(router: Router, services: WadoUriServices): void {
  router.get(WADO_URI_PATH, async (req: Request, res: Response) => {
    // The study the query names is the one audited (the guard classifies by path alone).
    const audit = res.locals.audit as { studyUids?: string[] } | undefined;
    const studies = wadoUriStudyUids(req.query as Record<string, unknown>);
    if (audit && studies) res.locals.audit = { ...audit, studyUids: studies };

    const query = parseWadoUriQuery(req.query as Record<string, unknown>);
    const deid = res.locals.deidView as DeidView | undefined;
    // A researcher names de-identified UIDs: resolved to the stored ones (404 if unknown or withheld).
    const target = await resolveResearcherTarget(deid, query.target);
    const a = await retrieveWadoUriObject(services, {
      ...query,
      target,
      restrictStudies: res.locals.restrictStudies as StudyRestriction | undefined,
      deid,
      mask: res.locals.identifierMask as IdentifierMask | undefined,
    });
    await sendPrepared(req, res, a);
  });
}
