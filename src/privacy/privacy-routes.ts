/**
 * The /privacy routes, behind the access guard (policy-routes.ts classifies them, policy.ts
 * decides per role): project de-identification options, burned-in annotation clearances, the
 * re-identification workflow and the PatientKey overlap count. Each route parses, calls one
 * service and answers JSON; errors are FHIR OperationOutcomes (FHIR R4 http 3.1.0.4.1).
 */
import express, { Router, type NextFunction, type Request, type Response } from 'express';
import type { Knex } from 'knex';
import { actorOf } from '../auth/actor';
import type { AuditSource } from '../audit/audit-event';
import { loggableUrl, type Logger } from '../logger';
import { fhirError, OperationOutcomeError, outcome } from '../fhir/outcome';
import { toOutcomeError } from '../fhir/routes';
import { clearBurnedIn, unclearBurnedIn } from './burned-in';
import { getProjectDeidOptions, putProjectDeidOptions } from './deid-options';
import { isPatientKey } from './patient-keys';
import { countPatientOverlap } from './patient-overlap';
import { markWritten, writeReidentificationEvent, type ReidentificationAuditFacts } from './privacy-audit';
import type { AppPrivacyService } from './privacy-service';
import {
  decideReidentificationRequest,
  fileReidentificationRequest,
  getReidentificationRequest,
  listReidentificationRequests,
  resolveReidentificationRequest,
  type RefusalFacts,
  type StepAudit,
} from './reidentification';

/** What the router needs. */
export interface PrivacyRouterDeps {
  knex: Knex;
  privacy: AppPrivacyService;
  /** The audit source (auth.audit.source) re-identification events are recorded under. */
  auditSource: AuditSource;
  logger: Logger;
}

const FHIR_JSON = 'application/fhir+json';

type Handler = (req: Request, res: Response) => Promise<void>;

/** Wraps a handler so a throw reaches the router's error handler. */
function route(handler: Handler) {
  return (req: Request, res: Response, next: NextFunction) => {
    handler(req, res).catch(next);
  };
}

/** Builds the router mounted at /privacy. */
export function createPrivacyRouter(deps: PrivacyRouterDeps): Router {
  const { knex, privacy, auditSource } = deps;
  const router = Router();
  router.use(express.json({ limit: '256kb', type: ['application/json', 'application/fhir+json'] }));

  /** Runs a re-identification step: its event in its transaction, or an event of the refusal. */
  const step = (facts: (req: Request) => Omit<ReidentificationAuditFacts, 'status' | 'action'> & { action: ReidentificationAuditFacts['action'] }, work: (req: Request, res: Response, audit: StepAudit) => Promise<{ status: number; body: unknown }>) =>
    route(async (req, res) => {
      const audit: StepAudit = (db, f) => writeReidentificationEvent(db, req, res, auditSource, f);
      let answer: { status: number; body: unknown };
      try {
        answer = await work(req, res, audit);
      } catch (err) {
        if (err instanceof OperationOutcomeError && err.status < 500) {
          const known = (err as { auditFacts?: RefusalFacts }).auditFacts;
          await writeReidentificationEvent(knex, req, res, auditSource, { ...facts(req), ...known, status: err.status, description: err.message.slice(0, 300) });
          markWritten(res);
        }
        throw err;
      }
      markWritten(res);
      res.status(answer.status).type('application/json').send(JSON.stringify(answer.body));
    });

  const bodyFacts = (req: Request) => {
    const b = (req.body ?? {}) as Record<string, unknown>;
    const keys = Array.isArray(b.patientKeys) ? (b.patientKeys as unknown[]).filter(isPatientKey).slice(0, 1000) : [];
    return {
      project: typeof b.project === 'string' ? b.project.slice(0, 64) : undefined,
      patientKeys: keys,
      purposeOfUse: typeof b.purposeOfUse === 'string' && /^[A-Z][A-Z0-9]{1,31}$/.test(b.purposeOfUse) ? b.purposeOfUse : undefined,
    };
  };
  const idFacts = (req: Request) => ({ requestId: /^\d{1,18}$/.test(String(req.params.id)) ? String(req.params.id) : undefined });

  router.get(
    '/projects/:project/deid-options',
    route(async (req, res) => {
      res.json(await getProjectDeidOptions(knex, actorOf(res), req.params.project));
    }),
  );
  router.put(
    '/projects/:project/deid-options',
    route(async (req, res) => {
      const options = await putProjectDeidOptions(knex, actorOf(res), req.params.project, req.body);
      privacy.notifyChange();
      res.json(options);
    }),
  );

  router.post(
    '/burned-in-clearances',
    route(async (req, res) => {
      const clearance = await clearBurnedIn(knex, actorOf(res), req.body);
      privacy.notifyChange();
      res.status(201).json(clearance);
    }),
  );
  router.delete(
    '/burned-in-clearances/:sop',
    route(async (req, res) => {
      await unclearBurnedIn(knex, actorOf(res), req.params.sop);
      privacy.notifyChange();
      res.status(204).end();
    }),
  );

  router.post(
    '/reidentification-requests',
    step(
      (req) => ({ action: 'create', step: 'file', ...bodyFacts(req) }),
      async (req, res, audit) => ({ status: 201, body: await fileReidentificationRequest(knex, actorOf(res), req.body, audit) }),
    ),
  );
  router.get(
    '/reidentification-requests',
    step(
      () => ({ action: 'search', step: 'search' }),
      async (req, res, audit) => {
        const requests = await listReidentificationRequests(knex, actorOf(res), { project: req.query.project, status: req.query.status });
        await audit(knex, { action: 'search', status: 200, step: 'search' });
        return { status: 200, body: { requests } };
      },
    ),
  );
  router.get(
    '/reidentification-requests/:id',
    step(
      (req) => ({ action: 'read', step: 'read', ...idFacts(req) }),
      async (req, res, audit) => {
        const request = await getReidentificationRequest(knex, actorOf(res), req.params.id);
        await audit(knex, { action: 'read', status: 200, step: 'read', requestId: request.id, project: request.project, patientKeys: request.patientKeys, purposeOfUse: request.purposeOfUse });
        return { status: 200, body: request };
      },
    ),
  );
  for (const [verb, decision] of [
    ['approve', 'approved'],
    ['refuse', 'refused'],
  ] as const) {
    router.post(
      `/reidentification-requests/:id/${verb}`,
      step(
        (req) => ({ action: 'update', step: verb, ...idFacts(req) }),
        async (req, res, audit) => ({ status: 200, body: await decideReidentificationRequest(knex, actorOf(res), req.params.id, decision, audit) }),
      ),
    );
  }
  router.post(
    '/reidentification-requests/:id/resolve',
    step(
      (req) => ({ action: 'operation', step: 'resolve', ...idFacts(req) }),
      async (req, res, audit) => ({ status: 200, body: await resolveReidentificationRequest(knex, actorOf(res), req.params.id, audit) }),
    ),
  );

  router.get(
    '/overlap',
    route(async (req, res) => {
      res.json(await countPatientOverlap(knex, privacy.patientKeyOptions, actorOf(res), req.query.projects));
    }),
  );

  router.use((req: Request, res: Response) => {
    res.status(404).type(FHIR_JSON).send(JSON.stringify(outcome('error', 'not-found', `No such endpoint: ${req.method} ${req.baseUrl}${req.path}`)));
  });
  router.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    if (res.headersSent) return res.destroy();
    // The FHIR adapter's mapping: body-parser errors 4xx, bad values 400, database outages 503.
    const answer = toOutcomeError(err);
    if (answer.status >= 500 && answer.status !== 503) deps.logger.error({ err, url: loggableUrl(req.originalUrl) }, 'privacy route failed');
    for (const [k, v] of Object.entries(answer.headers ?? {})) if (v !== undefined) res.setHeader(k, v);
    res.status(answer.status).type(FHIR_JSON).send(JSON.stringify(answer.outcome));
  });
  return router;
}
