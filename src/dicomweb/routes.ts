import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import type { TransactionAuditor } from '../audit/audit-response';
import { requestBaseUrl } from '../http/base-url';
import { AuditWriteError } from '../audit/audit-store';
import { isRetryableDbError } from '../db/database';
import { HttpError, ServiceUnavailableError } from '../http/errors';
import type { RenderedImageCache } from '../dicom/pixel-image-cache';
import { registerQidoRoutes } from './qido-routes';
import { registerRenderedRoutes } from './rendered-routes';
import { storeInstances, type InstanceAdmission, type StoreServices } from './stow-rs';
import { registerWadoRoutes } from './wado-routes';
import { registerWadoUriRoutes } from './wado-uri-routes';
import type { TranscodeHook } from './wado-rs';
import type { PrivacyService } from '../privacy/privacy-types';
import { createDeidView, DeidCache, type DeidEngine } from './deid-view';
import { createDeidEngine } from './deid-engine';
import { createIdentifierMask } from './identifier-mask';
import type { FieldRules } from '../auth/policy-fields';
import type { StudyResultCache } from './study-result-cache';
import { loggableUrl } from '../logger';

/** Services the DICOMweb routes call. */
export interface DicomwebServices extends StoreServices {
  publicBaseUrl?: string;
  /** Converts stored pixel data to another transfer syntax on retrieve (406 when absent). */
  transcoder?: TranscodeHook;
  /** Cache of rendered thumbnails (content-addressed keys, never stale). */
  thumbnailCache?: RenderedImageCache;
  /** Study results kept for the study list by date (checked against `studies.rev`, never stale). */
  studyResults?: StudyResultCache;
  /**
   * The column-level policy of a caller who sees identified data (src/auth/policy-fields.ts, as
   * for FHIR): its answers withhold what the rules mask or hide (identifier-mask.ts). Undefined: all shown.
   */
  fieldRules?: (req: Request) => ((resourceType: string) => FieldRules) | undefined;
  /** Writes a request's AuditEvent in a write's transaction (src/audit); absent: the audit gate alone. */
  auditInTransaction?: TransactionAuditor;
  /** Pseudonyms, UID maps and withheld instances for researchers' de-identified views (src/privacy). */
  privacy?: PrivacyService;
  /** The de-identification engine (defaults to src/dicom/deidentify*). */
  deidEngine?: DeidEngine;
}

const DICOM_JSON = 'application/dicom+json';

/** Mounts the DICOMweb (PS3.18) routes; each parses the request, calls one service, responds. */
export function createDicomwebRouter(services: DicomwebServices): Router {
  const router = express.Router();

  const auditor = services.auditInTransaction;
  // Look-ups shared by researchers' requests (UID resolutions, pseudonyms, ...: see DeidCache).
  const deidCache = new DeidCache();
  // A clearance withdrawn or options changed through /privacy in this process apply at once.
  services.privacy?.onChange?.(() => deidCache.forgetSettings());
  const store = async (req: Request, res: Response) => {
    const access = res.locals.access as { targetProjects?: string[]; studyScope?: 'all' | 'projects'; admitInstance?: InstanceAdmission } | undefined;
    // The request's own logger carries the request id onto every line the service writes.
    const result = await storeInstances({ ...services, logger: req.log ?? services.logger }, {
      contentType: req.headers['content-type'],
      contentLength: req.headers['content-length'] ? Number(req.headers['content-length']) : undefined,
      body: req,
      studyInstanceUID: typeof req.params.study === 'string' ? req.params.study : undefined,
      dicomwebBaseUrl: `${requestBaseUrl(req, services.publicBaseUrl)}/dicomweb`,
      projects: access?.targetProjects,
      studyScope: access?.studyScope,
      // Granular c scopes on ImagingStudy (src/auth/dicom-write-scopes.ts); undefined for most tokens.
      admit: access?.admitInstance,
      // A request some of whose instances the scopes refused is recorded as a denial, naming what it stored.
      auditStatement:
        auditor && res.locals.audit
          ? (studies, refusal) => auditor.statement(req, res, { studyUids: mergeUids(res, studies), ...(refusal ? { outcome: '4', outcomeDescription: refusal.slice(0, 300) } : {}) })
          : undefined,
    });
    // A stored instance may replace one a researcher saw with one that must be withheld.
    deidCache.forgetVisible();
    // The audit record names the studies stored (when the gate writes it, after a failure).
    if (res.locals.audit) {
      res.locals.audit = { ...res.locals.audit, studyUids: mergeUids(res, result.studies), ...(result.refusal ? { outcomeDescription: result.refusal.slice(0, 300) } : {}) };
    }
    for (const w of result.warnings.slice(0, 20)) res.append('Warning', `299 imaging-lake ${quoteWarning(w)}`);
    res.status(result.status).type(DICOM_JSON).send(JSON.stringify(result.body));
  };
  router.post('/studies', store);
  router.post('/studies/:study', store);

  // Researcher and PI tokens (access decision view 'deidentified') get every read de-identified.
  const deidEngine = services.deidEngine ?? createDeidEngine();
  router.use((req: Request, res: Response, next: NextFunction) => {
    res.locals.deidView = createDeidView(res.locals.access, { db: services.db, privacy: services.privacy, engine: deidEngine, cache: deidCache });
    // Data manager tokens: patient identifiers masked in every answer (the researcher view withholds them already).
    if (!res.locals.deidView) res.locals.identifierMask = createIdentifierMask(services.fieldRules?.(req));
    next();
  });

  registerQidoRoutes(router, services);
  registerWadoRoutes(router, services);
  registerRenderedRoutes(router, services);
  registerWadoUriRoutes(router, services);

  router.use(dicomwebErrorHandler(services));
  return router;
}

/**
 * DICOMweb error answers: the status, a Warning header (PS3.18 8.3.5.1 style) and a small
 * DICOM JSON body carrying the message in ErrorComment (0000,0902).
 */
export function dicomwebErrorHandler(services: Pick<DicomwebServices, 'logger'>) {
  return (raw: unknown, req: Request, res: Response, _next: NextFunction) => {
    // A researcher's error text names the de-identified UIDs it sent, never the originals.
    const view = res.locals.deidView as { sanitize(e: unknown): unknown } | undefined;
    const err = view ? view.sanitize(raw) : raw;
    // A dropped or restarting index database is a 503 the client may retry, on every DICOMweb path.
    // A change whose AuditEvent could not be written in its transaction is refused as the audit gate refuses.
    const httpError =
      err instanceof HttpError
        ? err
        : err instanceof AuditWriteError
          ? new ServiceUnavailableError('audit trail unavailable: access refused')
          : isRetryableDbError(err)
            ? new ServiceUnavailableError('the index database is unavailable')
            : null;
    const status = httpError?.status ?? 500;
    const message = httpError?.message ?? 'internal error';
    if (!httpError) services.logger.error({ err, url: loggableUrl(req.originalUrl) }, 'unhandled DICOMweb error');
    // A refusal decided past the guard (a granular delete scope) is audited with its reason, as the guard's own.
    if (status === 403 && res.locals.audit) res.locals.audit = { ...res.locals.audit, outcomeDescription: message.slice(0, 300) };
    if (res.headersSent) {
      res.destroy();
      return;
    }
    for (const [k, v] of Object.entries(httpError?.headers ?? {})) res.setHeader(k, v);
    res.append('Warning', `299 imaging-lake ${quoteWarning(message)}`);
    if (!req.complete) res.setHeader('Connection', 'close');
    res.status(status).type(DICOM_JSON).send(JSON.stringify({ '00000902': { vr: 'LO', Value: [message.slice(0, 1024)] } }));
    // An unread request body (e.g. 413, 415) is not drained: say so and close. A bodiless request
    // (GET) is complete and its connection stays usable.
    if (!req.complete) {
      res.setHeader('Connection', 'close');
      res.on('finish', () => req.socket?.destroySoon?.());
    }
  };
}

/** The request's audited study UIDs (from the path) plus `more`. */
function mergeUids(res: Response, more: string[]): string[] {
  const described = (res.locals.audit as { studyUids?: string[] } | undefined)?.studyUids ?? [];
  return [...new Set([...described, ...more])];
}

function quoteWarning(text: string): string {
  return `"${text.replace(/[\r\n]+/g, ' ').replace(/["\\]/g, "'").slice(0, 500)}"`;
}
