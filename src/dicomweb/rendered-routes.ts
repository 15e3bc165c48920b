/**
 * Rendered and thumbnail routes (PS3.18 10.4.1.1.3, thumbnail resources): each parses the
 * request, calls one service function of rendered-rs.ts, and writes the answer; errors go to the
 * DICOMweb error handler of the router these are registered on.
 */
import type { Request, Response, Router } from 'express';
import type { StudyRestriction } from '../db/wado-index';
import { answer } from './prepared-answer';
import { resolveResearcherTarget } from './deid-wado';
import type { DeidView } from './deid-view';
import {
  retrieveFrameThumbnail,
  retrieveInstanceThumbnail,
  retrieveRenderedFrames,
  retrieveRenderedInstance,
  retrieveRenderedSeries,
  retrieveRenderedStudy,
  retrieveSeriesThumbnail,
  retrieveStudyThumbnail,
  type RenderedRequest,
  type RenderedServices,
} from './rendered-rs';

const STUDY = '/studies/:study';
const SERIES = `${STUDY}/series/:series`;
const INSTANCE = `${SERIES}/instances/:instance`;
const FRAMES = `${INSTANCE}/frames/:frames`;

/**
 * Registers GET `.../rendered` and `.../thumbnail` at study, series, instance and frame level.
 * The access guard may set `res.locals.restrictStudies` (a StudyRestriction) before these run.
 */
export function registerRenderedRoutes(router: Router, services: RenderedServices): void {
  const common = (req: Request, res: Response): RenderedRequest => ({
    accept: req.headers.accept,
    acceptQuery: req.query.accept,
    query: req.query as Record<string, unknown>,
    restrictStudies: res.locals.restrictStudies as StudyRestriction | undefined,
    withheld: (res.locals.deidView as DeidView | undefined)?.withheld.bind(res.locals.deidView),
  });
  // A researcher's path holds de-identified UIDs: resolved (404 if unknown or withheld); pixels are unchanged.
  const resolve = <T extends { studyInstanceUID: string }>(res: Response, t: T) => resolveResearcherTarget(res.locals.deidView as DeidView | undefined, t);
  const study = (req: Request, res: Response) => resolve(res, { studyInstanceUID: param(req, 'study') });
  const series = (req: Request, res: Response) => resolve(res, { studyInstanceUID: param(req, 'study'), seriesInstanceUID: param(req, 'series') });
  const instance = (req: Request, res: Response) =>
    resolve(res, { studyInstanceUID: param(req, 'study'), seriesInstanceUID: param(req, 'series'), sopInstanceUID: param(req, 'instance') });
  const frames = async (req: Request, res: Response) => ({ ...(await instance(req, res)), frameList: param(req, 'frames') });

  router.get(`${STUDY}/rendered`, answer(async (req, res) => retrieveRenderedStudy(services, { ...common(req, res), ...(await study(req, res)) })));
  router.get(`${SERIES}/rendered`, answer(async (req, res) => retrieveRenderedSeries(services, { ...common(req, res), ...(await series(req, res)) })));
  router.get(`${INSTANCE}/rendered`, answer(async (req, res) => retrieveRenderedInstance(services, { ...common(req, res), ...(await instance(req, res)) })));
  router.get(`${FRAMES}/rendered`, answer(async (req, res) => retrieveRenderedFrames(services, { ...common(req, res), ...(await frames(req, res)) })));

  router.get(`${STUDY}/thumbnail`, answer(async (req, res) => retrieveStudyThumbnail(services, { ...common(req, res), ...(await study(req, res)) })));
  router.get(`${SERIES}/thumbnail`, answer(async (req, res) => retrieveSeriesThumbnail(services, { ...common(req, res), ...(await series(req, res)) })));
  router.get(`${INSTANCE}/thumbnail`, answer(async (req, res) => retrieveInstanceThumbnail(services, { ...common(req, res), ...(await instance(req, res)) })));
  router.get(`${FRAMES}/thumbnail`, answer(async (req, res) => retrieveFrameThumbnail(services, { ...common(req, res), ...(await frames(req, res)) })));
}

function param(req: Request, name: string): string {
  return (req.params as Record<string, string | undefined>)[name] ?? '';
}
