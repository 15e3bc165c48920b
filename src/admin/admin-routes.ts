/**
 * The governance API at /admin, behind the access guard (policy-routes.ts classifies it,
 * policy.ts decides per role, the guard checks the path's project is the caller's):
 *
 * - `GET|POST /projects`, `GET|PATCH|DELETE /projects/{id}`: projects;
 * - `GET /projects/{id}/members[?status=]`, `GET|PUT|DELETE /projects/{id}/members/{subject}`,
 *   `POST /projects/{id}/members/{subject}/approve|refuse`: members and their approval;
 * - `PUT|DELETE /projects/{id}/studies/{StudyInstanceUID}`: which projects hold a stored study;
 * - `GET /exports[?state=]`, `GET /exports/{id}`, `POST /exports/{id}/approve|refuse`: the
 *   approval of cohort exports (FHIR Bulk Data kick-offs of researchers);
 * - `GET /dimse/peers`, `GET|PUT|DELETE /dimse/peers/{AE title}`: the DIMSE peers (admins only).
 *
 * Each route parses, calls one service and answers JSON; errors are FHIR OperationOutcomes.
 * The audit gate records an AuditEvent for every request.
 */
import express, { Router, type NextFunction, type Request, type Response } from 'express';
import type { Knex } from 'knex';
import type { AccessLocals } from '../auth/access-guard';
import { actorOf } from '../auth/actor';
import type { BulkExports } from '../fhir/export/bulk-export';
import type { PrivacyService } from '../privacy/privacy-types';
import { approveExport, getExportApproval, listExportApprovals, refuseExport } from '../fhir/export/export-approvals';
import { fhirError } from '../fhir/outcome';
import { toOutcomeError } from '../fhir/routes';
import { loggableUrl, type Logger } from '../logger';
import {
  approveMember,
  createProjectFrom,
  deleteProject,
  getMember,
  getProject,
  listMembers,
  listProjects,
  putMember,
  refuseMember,
  removeMember,
  updateProject,
} from './project-admin';
import { linkStudy, unlinkStudy, type StudyLinker } from './project-studies';
import { deleteDimsePeer, getDimsePeer, listDimsePeers, putDimsePeer } from './dimse-peers';
import type { DimsePeer } from '../config';

/** What the router needs. */
export interface AdminRouterDeps {
  knex: Knex;
  exports: BulkExports;
  logger: Logger;
  /** Records a linked study's de-identified UIDs for its new project. */
  privacy?: PrivacyService;
  /** The DIMSE peers of DIMSE_PEERS (shown, not changed, by /dimse/peers). */
  configuredDimsePeers?: readonly DimsePeer[];
}

type Answer = { status: number; body?: unknown; location?: string };

function linkerOf(res: Response): StudyLinker {
  const access = res.locals.access as AccessLocals;
  return { ...actorOf(res), memberOf: access.principal.role === 'admin' ? 'all' : access.principal.projects };
}

function queryText(req: Request, name: string): string | undefined {
  const v = req.query[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw fhirError(400, 'invalid', `${name}: one value`);
  return v;
}

/** Builds the router mounted at /admin. */
export function createAdminRouter(deps: AdminRouterDeps): Router {
  const { knex, exports } = deps;
  const router = Router();
  router.use(express.json({ limit: '64kb', type: ['application/json', 'application/fhir+json'] }));

  const route = (handler: (req: Request, res: Response) => Promise<Answer>) => (req: Request, res: Response, next: NextFunction) => {
    handler(req, res).then((answer) => {
      if (answer.location) res.setHeader('Location', answer.location);
      if (answer.body === undefined) return void res.status(answer.status).end();
      res.status(answer.status).type('application/json').send(JSON.stringify(answer.body));
    }, next);
  };
  const p = (req: Request, name: string) => String(req.params[name]);

  const configured = deps.configuredDimsePeers ?? [];
  router.get('/dimse/peers', route(async () => ({ status: 200, body: { peers: await listDimsePeers(knex, configured) } })));
  router.get('/dimse/peers/:ae', route(async (req) => ({ status: 200, body: await getDimsePeer(knex, configured, p(req, 'ae')) })));
  router.put(
    '/dimse/peers/:ae',
    route(async (req, res) => {
      const { created, peer } = await putDimsePeer(knex, configured, p(req, 'ae'), req.body, actorOf(res).subject);
      return { status: created ? 201 : 200, body: peer, location: created ? `/admin/dimse/peers/${encodeURIComponent(peer.aeTitle)}` : undefined };
    }),
  );
  router.delete(
    '/dimse/peers/:ae',
    route(async (req) => {
      await deleteDimsePeer(knex, configured, p(req, 'ae'));
      return { status: 204 };
    }),
  );

  router.get('/projects', route(async (_req, res) => ({ status: 200, body: { projects: await listProjects(knex, actorOf(res)) } })));
  router.post(
    '/projects',
    route(async (req) => {
      const project = await createProjectFrom(knex, req.body);
      return { status: 201, body: project, location: `${req.baseUrl}/projects/${encodeURIComponent(project.id)}` };
    }),
  );
  router.get('/projects/:project', route(async (req) => ({ status: 200, body: await getProject(knex, p(req, 'project')) })));
  router.patch('/projects/:project', route(async (req, res) => ({ status: 200, body: await updateProject(knex, actorOf(res), p(req, 'project'), req.body) })));
  router.put('/projects/:project', route(async (req, res) => ({ status: 200, body: await updateProject(knex, actorOf(res), p(req, 'project'), req.body) })));
  router.delete(
    '/projects/:project',
    route(async (req) => {
      await deleteProject(knex, p(req, 'project'));
      return { status: 204 };
    }),
  );

  router.get('/projects/:project/members', route(async (req) => ({ status: 200, body: { members: await listMembers(knex, p(req, 'project'), queryText(req, 'status')) } })));
  router.get('/projects/:project/members/:subject', route(async (req) => ({ status: 200, body: await getMember(knex, p(req, 'project'), p(req, 'subject')) })));
  router.put(
    '/projects/:project/members/:subject',
    route(async (req, res) => {
      const { member, created } = await putMember(knex, actorOf(res), p(req, 'project'), p(req, 'subject'), req.body);
      return { status: created ? 201 : 200, body: member };
    }),
  );
  router.delete(
    '/projects/:project/members/:subject',
    route(async (req, res) => {
      await removeMember(knex, actorOf(res), p(req, 'project'), p(req, 'subject'));
      return { status: 204 };
    }),
  );
  router.post('/projects/:project/members/:subject/approve', route(async (req, res) => ({ status: 200, body: await approveMember(knex, actorOf(res), p(req, 'project'), p(req, 'subject')) })));
  router.post(
    '/projects/:project/members/:subject/refuse',
    route(async (req) => {
      await refuseMember(knex, p(req, 'project'), p(req, 'subject'));
      return { status: 204 };
    }),
  );

  router.put(
    '/projects/:project/studies/:study',
    route(async (req, res) => {
      const [project, study] = [p(req, 'project'), p(req, 'study')];
      const created = await linkStudy(knex, deps.privacy, linkerOf(res), project, study);
      return { status: created ? 201 : 200, body: { project, study } };
    }),
  );
  router.delete(
    '/projects/:project/studies/:study',
    route(async (req) => {
      await unlinkStudy(knex, p(req, 'project'), p(req, 'study'));
      return { status: 204 };
    }),
  );

  router.get('/exports', route(async (req, res) => ({ status: 200, body: { exports: await listExportApprovals(knex, actorOf(res), queryText(req, 'state')) } })));
  router.get('/exports/:id', route(async (req, res) => ({ status: 200, body: await getExportApproval(knex, actorOf(res), p(req, 'id')) })));
  router.post(
    '/exports/:id/approve',
    route(async (req, res) => {
      const { view, start } = await approveExport(knex, actorOf(res), p(req, 'id'));
      // The last approval starts the export here, from the authorization kept with it.
      if (start) await exports.resume(view.id);
      return { status: 200, body: view };
    }),
  );
  router.post('/exports/:id/refuse', route(async (req, res) => ({ status: 200, body: await refuseExport(knex, actorOf(res), p(req, 'id'), (req.body as { reason?: unknown } | undefined)?.reason) })));

  router.use((req: Request, _res: Response, next: NextFunction) => next(fhirError(404, 'not-found', `No ${req.method} ${req.path} under /admin`)));

  // Only this router's handlers pass errors here: every failure is an OperationOutcome.
  router.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const e = toOutcomeError(err);
    if (e.status >= 500) deps.logger.error({ err, url: loggableUrl(req.originalUrl) }, 'admin request failed');
    if (res.headersSent) return void res.destroy();
    res.status(e.status).type('application/fhir+json').send(JSON.stringify(e.outcome));
  });
  return router;
}
