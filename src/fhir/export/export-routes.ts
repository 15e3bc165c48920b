import { pipeline } from 'node:stream/promises';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Knex } from 'knex';
import { requestBaseUrl } from '../../http/base-url';
import { loggableUrl, type Logger } from '../../logger';
import type { PrivacyService } from '../../privacy/privacy-types';
import type { FhirDefinitions } from '../definitions';
import { createDeidView } from '../deid/deid-view';
import { isJsonContentType } from '../http/format';
import { parseQueryString } from '../http/fhir-request';
import { fhirError, notFound, outcome } from '../outcome';
import { toOutcomeError } from '../routes';
import type { AccessFilter } from '../store/access';
import type { BulkExports, ExportAccess, ExportFile } from './bulk-export';
import { parseExportRequest, type ExportLevel } from './export-request';

/**
 * The HTTP side of FHIR Bulk Data export (Bulk Data Access IG 2.0.0), mounted at `/fhir` before
 * the FHIR router:
 *
 * - kick-off: `GET|POST /$export`, `/Patient/$export`, `/Group/{id}/$export` (Prefer:
 *   respond-async) -> 202 with Content-Location, the status URL;
 * - status: `GET /$export-status/{job}` -> 202 with X-Progress and Retry-After while it runs,
 *   200 with the manifest when complete, a 500 OperationOutcome when it failed;
 *   `DELETE` cancels it (or deletes a finished one) -> 202;
 * - output: `GET /$export-output/{job}/{n}` -> application/fhir+ndjson.
 *
 * Status and files belong to the token that kicked the export off (requiresAccessToken: true);
 * anyone else gets 404, as for a job that does not exist.
 */

/** What the access layer says about the caller (src/auth/request-access.ts). */
export interface ExportCaller {
  owner: string;
  filterFor(type: string): AccessFilter | undefined | 'denied';
  /** Set when the caller sees de-identified data: its projects (whose options apply). */
  deidentifiedFor?: readonly string[] | 'all';
  /** The authorization as JSON, from which the same caller is made again (an approved export runs later). */
  grant?: unknown;
  /** Projects whose principal investigator must approve the caller's exports first. */
  approvalProjects?: readonly string[];
}

/** What the de-identified view of an export needs. */
export interface ExportViewDeps {
  defs: FhirDefinitions;
  knex: Knex;
  privacy?: PrivacyService;
  maxDateOffsetDays?: number;
}

/** The access an export job reads with, for a caller: its row filters and, when it sees one, its de-identified view. */
export function exportAccessOf(caller: ExportCaller, deps: ExportViewDeps): ExportAccess {
  const access: ExportAccess = { owner: caller.owner, filterFor: caller.filterFor };
  if (caller.grant !== undefined) access.grant = caller.grant;
  if (caller.approvalProjects) access.approvalProjects = caller.approvalProjects;
  const projects = caller.deidentifiedFor;
  if (projects) {
    access.deid = () => createDeidView({ defs: deps.defs, db: deps.knex, privacy: deps.privacy, projects, now: () => new Date(), maxOffsetDays: deps.maxDateOffsetDays });
  }
  return access;
}

export interface ExportRouterDeps extends ExportViewDeps {
  exports: BulkExports;
  logger: Logger;
  publicBaseUrl?: string;
  /** The caller as the access guard decided it; undefined without a guard (every row, owner "anonymous"). */
  callerOf?: (req: Request) => ExportCaller | undefined;
}

/** Seconds a client should wait between polls while an export runs. */
const RETRY_AFTER = '2';
/** Seconds between polls while an export waits for a person's approval. */
const APPROVAL_RETRY_AFTER = '60';

export function createExportRouter(deps: ExportRouterDeps): express.Router {
  const router = express.Router();
  const json = express.json({ type: (req) => isJsonContentType(req.headers['content-type'] as string | undefined), limit: '1mb', strict: true });
  const baseOf = (req: Request) => `${requestBaseUrl(req, deps.publicBaseUrl)}${req.baseUrl}`;
  const callerOf = (req: Request): ExportCaller => deps.callerOf?.(req) ?? { owner: 'anonymous', filterFor: () => undefined };

  const kickOff = (levelOf: (req: Request) => ExportLevel) => async (req: Request, res: Response, next: NextFunction) => {
    try {
      if (req.method !== 'GET' && req.method !== 'POST') throw fhirError(405, 'not-supported', `${req.method} is not allowed on ${req.path}: kick an export off with GET or POST`);
      const query = parseQueryString(req.originalUrl.includes('?') ? req.originalUrl.slice(req.originalUrl.indexOf('?') + 1) : '');
      const headers = { prefer: [req.headers.prefer ?? []].flat().join(', '), accept: req.headers.accept };
      const request = parseExportRequest(deps.defs, levelOf(req), query, req.method === 'POST' ? req.body : undefined, headers);
      const access = exportAccessOf(callerOf(req), deps);
      const id = await deps.exports.kickOff(request, access, `${baseOf(req)}${req.url}`);
      res.setHeader('Content-Location', `${baseOf(req)}/$export-status/${id}`);
      const waits = access.approvalProjects && access.approvalProjects.length > 0;
      const text = waits
        ? `Export ${id} accepted; it runs once a principal investigator of project ${access.approvalProjects?.join(', ')} approves it. Poll its Content-Location for the result`
        : `Export ${id} accepted; poll its Content-Location for the result`;
      sendJson(res, 202, outcome('information', 'informational', text));
    } catch (err) {
      next(err);
    }
  };

  router.all('/$export', json, kickOff(() => ({ kind: 'system' })));
  router.all('/Patient/$export', json, kickOff(() => ({ kind: 'patient' })));
  router.all('/Group/:id/$export', json, kickOff((req) => ({ kind: 'group', groupId: String(req.params.id) })));

  router.all('/$export-status/:job', async (req: Request, res: Response, next: NextFunction) => {
    try {
      const id = String(req.params.job);
      const owner = callerOf(req).owner;
      if (req.method === 'DELETE') {
        if (!(await deps.exports.remove(id, owner))) throw notFound(`No export ${id}`);
        return sendJson(res, 202, outcome('information', 'informational', `Export ${id} cancelled; its files are deleted`));
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') throw fhirError(405, 'not-supported', `${req.method} is not allowed on an export's status`);
      const status = await deps.exports.status(id, owner);
      if (!status) throw notFound(`No export ${id}`);
      // A failed export is an answer, not an error of this request (IG: a 5xx with an OperationOutcome).
      if (status.state === 'failed') return sendJson(res, 500, outcome('error', 'exception', `The export failed: ${status.message}`));
      // A refused cohort export is the end of the job: a 4xx with the reason (IG: "Response - Error Status").
      if (status.state === 'refused') return sendJson(res, 403, outcome('error', 'forbidden', status.message));
      if (status.state !== 'completed') {
        res.setHeader('X-Progress', status.progress);
        res.setHeader('Retry-After', status.state === 'awaiting-approval' ? APPROVAL_RETRY_AFTER : RETRY_AFTER);
        return void res.status(202).end();
      }
      const base = baseOf(req);
      const absolute = (files: ExportFile[]) => files.map((o) => ({ type: o.type, url: `${base}/${o.url}`, count: o.count }));
      const manifest = { ...status.manifest, output: absolute(status.manifest.output), deleted: absolute(status.manifest.deleted) };
      res.setHeader('Expires', status.expires.toUTCString());
      res.status(200).type('application/json').send(JSON.stringify(manifest));
    } catch (err) {
      next(err);
    }
  });

  router.all('/$export-output/:job/:file', async (req: Request, res: Response, next: NextFunction) => {
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') throw fhirError(405, 'not-supported', `${req.method} is not allowed on an export file`);
      const { job, file: n } = req.params as Record<string, string>;
      const file = /^\d{1,9}$/.test(n) ? await deps.exports.file(job, Number(n), callerOf(req).owner) : undefined;
      if (!file) throw notFound(`No export file ${job}/${n}`);
      res.status(200).type('application/fhir+ndjson');
      if (Buffer.isBuffer(file)) return void res.send(file);
      if (req.method === 'HEAD') {
        file.destroy();
        return void res.end();
      }
      // Streamed from the blob store; a failure mid-way can only cut the response short.
      await pipeline(file, res).catch((err: unknown) => deps.logger.warn({ err, exportId: job }, 'bulk export file stream ended early'));
    } catch (err) {
      next(err);
    }
  });

  // Only this router's handlers pass errors here: every failure is an OperationOutcome.
  router.use((err: unknown, req: Request, res: Response, _next: NextFunction) => sendError(deps.logger, err, req, res));
  return router;
}

function sendJson(res: Response, status: number, body: unknown): void {
  res.status(status).type('application/fhir+json').send(JSON.stringify(body));
}

function sendError(logger: Logger, err: unknown, req: Request, res: Response): void {
  const e = toOutcomeError(err);
  if (e.status >= 500) logger.error({ err, url: loggableUrl(req.originalUrl) }, 'bulk export request failed');
  if (res.headersSent) return void res.destroy();
  for (const [k, v] of Object.entries(e.headers)) res.setHeader(k, v);
  sendJson(res, e.status, e.outcome);
}
