/**
 * WADO-RS (PS3.18 10.4), delete and capabilities routes. Each route parses the request, calls
 * one service function, and writes the answer; errors go to the DICOMweb error handler.
 */
import type { Request, Response, Router } from 'express';
import type { Knex } from 'knex';
import type { TransactionAuditor } from '../audit/audit-response';
import { requestBaseUrl } from '../http/base-url';
import type { StudyRestriction } from '../db/wado-index';
import { registerCapabilitiesRoutes } from './capabilities';
import { assertBulkdataVisible, resolveResearcherTarget } from './deid-wado';
import type { DeidView } from './deid-view';
import type { IdentifierMask } from './identifier-mask';
import { deleteInstance, deleteSeries, deleteStudy, type DeleteScope } from './delete-rs';
import { answer } from './prepared-answer';
import {
  retrieveBulkdata,
  retrieveInstance,
  retrieveInstanceFrames,
  retrieveInstanceMetadata,
  retrieveSeries,
  retrieveSeriesMetadata,
  retrieveStudy,
  retrieveStudyMetadata,
  type WadoServices,
} from './wado-rs';

/**
 * Hook for the access guard (a later auth issue): the studies a request may see. Attach it as
 * `res.locals.restrictStudies` in a middleware before these routes; absent means unrestricted.
 */
export type RestrictStudiesLocal = StudyRestriction | undefined;

const STUDY = '/studies/:study';
const SERIES = `${STUDY}/series/:series`;
const INSTANCE = `${SERIES}/instances/:instance`;

/** Registers WADO-RS retrieve, delete and capabilities routes on the DICOMweb router. */
export function registerWadoRoutes(router: Router, services: WadoServices & { auditInTransaction?: TransactionAuditor }): void {
  const dicomwebBase = (req: Request) => `${requestBaseUrl(req, services.publicBaseUrl)}/dicomweb`;
  const common = (req: Request, res: Response) => ({
    accept: req.headers.accept,
    acceptQuery: req.query.accept,
    restrictStudies: res.locals.restrictStudies as RestrictStudiesLocal,
    deid: res.locals.deidView as DeidView | undefined,
    mask: res.locals.identifierMask as IdentifierMask | undefined,
  });
  // A researcher's path holds de-identified UIDs: resolved to the stored ones (404 if unknown or withheld).
  const ids = async (req: Request, res: Response) => {
    const sent = { studyInstanceUID: param(req, 'study'), seriesInstanceUID: param(req, 'series'), sopInstanceUID: param(req, 'instance') };
    return resolveResearcherTarget(res.locals.deidView as DeidView | undefined, sent);
  };
  // Deletes are not a researcher's interaction (the policy refuses them): their paths are stored UIDs.
  const rawIds = (req: Request) => ({ studyInstanceUID: param(req, 'study'), seriesInstanceUID: param(req, 'series'), sopInstanceUID: param(req, 'instance') });
  const studyId = async (req: Request, res: Response) => (await resolveResearcherTarget(res.locals.deidView as DeidView | undefined, { studyInstanceUID: param(req, 'study') })).studyInstanceUID;
  const baseUrl = (req: Request) => requestBaseUrl(req, services.publicBaseUrl);

  router.get(STUDY, answer(async (req, res) => retrieveStudy(services, { ...common(req, res), studyInstanceUID: await studyId(req, res) })));
  router.get(SERIES, answer(async (req, res) => retrieveSeries(services, { ...common(req, res), ...(await ids(req, res)) })));
  router.get(INSTANCE, answer(async (req, res) => retrieveInstance(services, { ...common(req, res), ...(await ids(req, res)) })));

  router.get(`${STUDY}/metadata`, answer(async (req, res) => retrieveStudyMetadata(services, { ...common(req, res), studyInstanceUID: await studyId(req, res), baseUrl: baseUrl(req) })));
  router.get(`${SERIES}/metadata`, answer(async (req, res) => retrieveSeriesMetadata(services, { ...common(req, res), ...(await ids(req, res)), baseUrl: baseUrl(req) })));
  router.get(`${INSTANCE}/metadata`, answer(async (req, res) => retrieveInstanceMetadata(services, { ...common(req, res), ...(await ids(req, res)), baseUrl: baseUrl(req) })));

  router.get(`${INSTANCE}/frames/:frames`, answer(async (req, res) => retrieveInstanceFrames(services, { ...common(req, res), ...(await ids(req, res)), frameList: param(req, 'frames') })));
  router.get(
    `${INSTANCE}/bulkdata/*path`,
    answer(async (req, res) => {
      const raw = (req.params as Record<string, string | string[]>).path;
      const path = Array.isArray(raw) ? raw : [raw];
      const target = await ids(req, res);
      // A researcher gets bulk data only of attributes that survive de-identification.
      await assertBulkdataVisible(services, res.locals.deidView as DeidView | undefined, target, path);
      return retrieveBulkdata(services, { ...common(req, res), ...target, path, range: req.headers.range });
    }),
  );

  // What a delete may touch: the row filter, and the caller's granular delete scopes when it has some (src/auth/dicom-write-scopes.ts).
  const restrict = (res: Response) => ({
    restrictStudies: res.locals.restrictStudies as RestrictStudiesLocal,
    scope: (res.locals.access as { deleteScope?: DeleteScope } | undefined)?.deleteScope,
  });
  // The delete and its AuditEvent commit together (services.auditInTransaction, src/audit).
  const audit = (req: Request, res: Response) => {
    const auditor = services.auditInTransaction;
    return auditor && res.locals.audit ? (trx: Knex.Transaction) => auditor(trx, req, res, { status: 204 }) : undefined;
  };
  router.delete(STUDY, async (req, res) => {
    await deleteStudy(services, { studyInstanceUID: param(req, 'study'), ...restrict(res), dicomwebBaseUrl: dicomwebBase(req), audit: audit(req, res) });
    res.status(204).end();
  });
  router.delete(SERIES, async (req, res) => {
    const { studyInstanceUID, seriesInstanceUID } = rawIds(req);
    await deleteSeries(services, { studyInstanceUID, seriesInstanceUID, ...restrict(res), dicomwebBaseUrl: dicomwebBase(req), audit: audit(req, res) });
    res.status(204).end();
  });
  router.delete(INSTANCE, async (req, res) => {
    await deleteInstance(services, { ...rawIds(req), ...restrict(res), dicomwebBaseUrl: dicomwebBase(req), audit: audit(req, res) });
    res.status(204).end();
  });

  registerCapabilitiesRoutes(router, services);
}

function param(req: Request, name: string): string {
  const v = (req.params as Record<string, string | undefined>)[name];
  return v ?? '';
}
