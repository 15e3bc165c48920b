/**
 * Rendered and thumbnail routes (PS3.18 10.4.1.1.3, thumbnail resources): each parses the
 * request, calls one service function of rendered-rs.ts, and writes the answer; errors go to the
 * DICOMweb error handler of the router these are registered on.
 */
import type { Request, Response, Router } from 'express';
import type { StudyRestriction } from '../db/wado-index';
import { ClientGoneError } from './multipart-writer';
import {
  retrieveFrameThumbnail,
  retrieveInstanceThumbnail,
  retrieveRenderedFrames,
  retrieveRenderedInstance,
  retrieveRenderedSeries,
  retrieveRenderedStudy,
  retrieveSeriesThumbnail,
  retrieveStudyThumbnail,
  type RenderedAnswer,
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
  });
  const study = (req: Request) => ({ studyInstanceUID: param(req, 'study') });
  const series = (req: Request) => ({ ...study(req), seriesInstanceUID: param(req, 'series') });
  const instance = (req: Request) => ({ ...series(req), sopInstanceUID: param(req, 'instance') });
  const frames = (req: Request) => ({ ...instance(req), frameList: param(req, 'frames') });

  router.get(`${STUDY}/rendered`, answer((req, res) => retrieveRenderedStudy(services, { ...common(req, res), ...study(req) })));
  router.get(`${SERIES}/rendered`, answer((req, res) => retrieveRenderedSeries(services, { ...common(req, res), ...series(req) })));
  router.get(`${INSTANCE}/rendered`, answer((req, res) => retrieveRenderedInstance(services, { ...common(req, res), ...instance(req) })));
  router.get(`${FRAMES}/rendered`, answer((req, res) => retrieveRenderedFrames(services, { ...common(req, res), ...frames(req) })));

  router.get(`${STUDY}/thumbnail`, answer((req, res) => retrieveStudyThumbnail(services, { ...common(req, res), ...study(req) })));
  router.get(`${SERIES}/thumbnail`, answer((req, res) => retrieveSeriesThumbnail(services, { ...common(req, res), ...series(req) })));
  router.get(`${INSTANCE}/thumbnail`, answer((req, res) => retrieveInstanceThumbnail(services, { ...common(req, res), ...instance(req) })));
  router.get(`${FRAMES}/thumbnail`, answer((req, res) => retrieveFrameThumbnail(services, { ...common(req, res), ...frames(req) })));
}

function param(req: Request, name: string): string {
  return (req.params as Record<string, string | undefined>)[name] ?? '';
}

/** Sends a prepared answer (nothing for HEAD); a client that leaves ends it quietly. */
function answer(prepare: (req: Request, res: Response) => Promise<RenderedAnswer>) {
  return async (req: Request, res: Response) => {
    const a = await prepare(req, res);
    res.status(a.status);
    for (const [k, v] of Object.entries(a.headers)) res.setHeader(k, v);
    if (req.method === 'HEAD') {
      a.discard();
      res.end();
      return;
    }
    try {
      await a.send(res);
    } catch (err) {
      a.discard();
      if (err instanceof ClientGoneError) return;
      throw err;
    }
  };
}
