import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import { randomUUID } from 'node:crypto';
import pinoHttp from 'pino-http';
import type { AppConfig } from './config';
import { createDatabase, type Database } from './db/database';
import { assertSchemaCurrent, runMigrations } from './db/migrate';
import { createCorsMiddleware } from './dicomweb/cors';
import { createDicomwebRouter } from './dicomweb/routes';
import type { StoreServices } from './dicomweb/stow-rs';
import { StudyResultCache } from './dicomweb/study-result-cache';
import { createIndexChangeSync } from './dicomweb/index-change-sync';
import { createRenderedImageCache } from './dicom/pixel-image-cache';
import { createTranscodeHook } from './dicom/transcode-hook';
import { startImagingStudyFlusher, type ImagingStudyFlusher } from './fhir/dicom/imaging-study-flusher';
import { createFhirRouter } from './fhir/routes';
import { createBulkExports, type BulkExports } from './fhir/export/bulk-export';
import { createExportRouter, exportAccessOf, type ExportViewDeps } from './fhir/export/export-routes';
import { loadFhirDefinitions } from './fhir/definitions';
import { createAuditEventTypeHandler } from './fhir/audit-event-handler';
import { createResourceRules } from './fhir/resources/resource-rules';
import { createAccessGuard } from './auth/access-guard';
import { createAuthRouter } from './auth/auth-router';
import { createAuthServices, type AuthServices } from './auth/auth-services';
import { startAuditPartitionMaintenance } from './audit/audit-store';
import { createTransactionAuditor } from './audit/audit-response';
import { auditWriterFor, closeAuditWriter, installAuditWriter } from './audit/audit-writer';
import { openAuditSpool } from './audit/audit-spool';
import { bundleEntryDenial, exportCallerFor, exportCallerOf, fhirAccessFilter, fhirSearchFilter, fhirWriteFilter, type ExportGrant, fhirCreateLinker, fieldRulesOf, fhirProjectsOf } from './auth/request-access';
import { createLogger, loggableUrl, type Logger } from './logger';
import { startOrphanSweeper, type OrphanSweeper } from './maintenance/orphan-sweeper';
import type { BlobStore } from './storage/blob-store';
import { createBlobStore } from './storage/create-blob-store';
import { createPrivacyRouter } from './privacy/privacy-routes';
import { createAdminRouter } from './admin/admin-routes';
import { createPrivacyService, type AppPrivacyService } from './privacy/privacy-service';

/** The composed server: the express app plus the subsystems it owns. */
export interface AppHandle {
  readonly express: Express;
  readonly config: AppConfig;
  readonly db: Database;
  readonly blobs: BlobStore;
  readonly logger: Logger;
  readonly sweeper: OrphanSweeper;
  readonly auth: AuthServices;
  /** Pseudonyms, date offsets, UID maps, withheld instances (src/privacy): what de-identified views use. */
  readonly privacy: AppPrivacyService;
  /** Writes the ImagingStudy of studies the DICOM index marked pending (background, before FHIR reads, at shutdown). */
  readonly imagingStudies: ImagingStudyFlusher;
  /** FHIR Bulk Data export jobs (run in the background, one at a time). */
  readonly exports: BulkExports;
  /** What STOW-RS stores with (blob store, index, index-change hook): the DIMSE C-STORE SCP stores the same way. */
  readonly store: StoreServices;
  /** Stops background work owned by the app (audit partition maintenance, bulk exports). */
  readonly stopBackground: () => Promise<void>;
}

/**
 * Composes the server from a validated config (STYLE 8: nothing happens at import).
 * Migrates the schema when configured, and refuses to start on a schema it does not know.
 */
export async function createApp(config: AppConfig, options: { logger?: Logger } = {}): Promise<AppHandle> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const db = createDatabase(config.database, logger);
  let blobs: BlobStore | undefined;
  let auth: AuthServices;
  let privacy: AppPrivacyService;
  try {
    if (config.migrateOnStart) {
      const applied = await runMigrations(db.knex);
      if (applied.length > 0) logger.info({ applied }, 'migrations applied');
    }
    await assertSchemaCurrent(db.knex);
    blobs = createBlobStore(config.blobs);
    auth = await createAuthServices({ knex: db.knex, config: config.auth, logger });
    privacy = createPrivacyService(config.privacy);
    // AuditEvents durable on local disk before the answer, shipped to the database in batches.
    if (config.auditSpoolDir) installAuditWriter(db.knex, await openAuditSpool(db.knex, { dir: config.auditSpoolDir, logger, shipDelayMs: config.auditSpoolShipDelayMs }));
    // Studies linked before the privacy tables existed, or outside the ingest hook: one anti-join when none is missing.
    const backfilled = await privacy.backfill(db.knex);
    if (backfilled.patients > 0 || backfilled.rows > 0) logger.info(backfilled, 'privacy backfill');
  } catch (err) {
    await closeAuditWriter(db.knex).catch(() => undefined);
    await db.close().catch(() => undefined);
    throw err;
  }
  const sweeper = startOrphanSweeper({ db, blobs, logger, graceSeconds: config.orphanGraceSeconds, intervalSeconds: config.sweepIntervalSeconds });
  const partitions = startAuditPartitionMaintenance(db.knex, logger);
  // Picks up studies left pending by a previous run at once.
  const imagingStudies = startImagingStudyFlusher({ knex: db.knex, logger });
  // A cohort export approved later runs from the authorization kept with it, in whichever process took the approval.
  const exportViews: ExportViewDeps = { defs: loadFhirDefinitions(), knex: db.knex, privacy, maxDateOffsetDays: config.privacy.dateShiftMaxDays };
  const exports = createBulkExports({
    knex: db.knex,
    defs: loadFhirDefinitions(),
    logger,
    refresh: () => imagingStudies.flushAll(),
    blobs,
    accessOf: (grant) => exportAccessOf(exportCallerFor(grant as ExportGrant, config.exportApproval), exportViews),
  });
  // One truth for every way in: the index change marks its studies pending in its own transaction (with
  // the ImagingStudy id and Patient); the flusher writes the ImagingStudy before FHIR can read it.
  // Then PatientKeys, project links and de-identified UIDs, in the same transaction.
  const store: StoreServices = { db, blobs, logger, config, onIndexChange: createIndexChangeSync({ privacy, imagingStudies }) };
  const app = buildExpress({ config, store, auth, privacy, imagingStudies, exports, exportViews });
  const stopBackground = async () => {
    await exports.stop();
    await partitions.stop();
  };
  return { express: app, config, db, blobs, logger, sweeper, auth, privacy, imagingStudies, exports, store, stopBackground };
}

/** Stops background work and releases the database and blob store. */
export async function shutdownApp(app: AppHandle): Promise<void> {
  await app.stopBackground();
  await app.sweeper.stop();
  // Studies still pending get their ImagingStudy now (what fails stays pending for the next start).
  await app.imagingStudies.stop();
  await app.blobs.close();
  // Commit the AuditEvents still queued (their requests are waiting for them) before the pool closes.
  await closeAuditWriter(app.db.knex);
  await app.db.close();
}

function buildExpress(deps: {
  config: AppConfig;
  store: StoreServices;
  auth: AuthServices;
  privacy: AppPrivacyService;
  imagingStudies: ImagingStudyFlusher;
  exports: BulkExports;
  exportViews: ExportViewDeps;
}): Express {
  const { config, store, auth, privacy, imagingStudies, exports, exportViews } = deps;
  const { db, blobs, logger } = store;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(
    pinoHttp({
      logger,
      genReqId: (req, res) => {
        const given = req.headers['x-request-id'];
        const id = typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) ? given : randomUUID();
        res.setHeader('X-Request-Id', id);
        return id;
      },
      customLogLevel: (_req, res, err) => (err || res.statusCode >= 500 ? 'error' : res.statusCode >= 400 ? 'warn' : 'info'),
      // A request's log lines name it, never its credentials: the default serializer logs every
      // header (Authorization: Bearer ..., cookies). A few fields are also cheap to bind to the
      // child logger pino-http makes for every request, whether or not anything is logged.
      wrapSerializers: false,
      serializers: { req: serializeRequest, res: (res: Response) => ({ statusCode: res.statusCode }) },
    }),
  );

  // Health answers never need a token.
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', async (_req, res) => {
    const checks: Record<string, string> = {};
    await Promise.all([
      db.checkHealth().then(() => (checks.database = 'ok'), (e) => (checks.database = `error: ${String(e?.message ?? e)}`)),
      blobs.checkHealth().then(() => (checks.blobStore = 'ok'), (e) => (checks.blobStore = `error: ${String(e?.message ?? e)}`)),
    ]);
    const ready = Object.values(checks).every((v) => v === 'ok');
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'unavailable', checks });
  });

  // CORS answers preflights before any guard: browsers send them without credentials.
  // Writes record their AuditEvent in their own transaction (the gate covers everything else).
  const auditInTransaction = createTransactionAuditor(auth.audit);
  const cors = createCorsMiddleware(config.corsOrigins);
  app.use(['/dicomweb', '/fhir', '/oauth2'], cors);
  // Token endpoint, JWKS, introspection, SMART discovery, SAML sign-in.
  app.use(createAuthRouter(auth));
  // The one access guard in front of every protocol router: audit gate, token, policy, row filters.
  app.use(createAccessGuard(auth));
  // A token whose scopes narrow ImagingStudy sees the studies whose ImagingStudy passes them:
  // the ImagingStudy of a study stored a moment ago is written first (else it stays hidden until
  // the background rewrite). A failure here leaves it hidden, never shown.
  app.use('/dicomweb', (_req: Request, res: Response, next: NextFunction) => {
    if (!res.locals.studiesByImagingStudy) return next();
    imagingStudies.flushAll().then(
      () => next(),
      (err: unknown) => {
        logger.warn({ err }, 'pending ImagingStudy rewrite before a scope-narrowed DICOMweb request failed');
        next();
      },
    );
  });
  app.use(
    '/dicomweb',
    createDicomwebRouter({
      ...store,
      publicBaseUrl: config.publicBaseUrl,
      transcoder: createTranscodeHook({ db, blobs }),
      thumbnailCache: createRenderedImageCache(),
      studyResults: config.qidoStudyCacheBytes > 0 ? new StudyResultCache(config.qidoStudyCacheBytes) : undefined,
      auditInTransaction,
      privacy,
      // The same column-level rules as FHIR: a data manager's answers mask patient identifiers.
      fieldRules: fieldRulesOf,
    }),
  );

  // Bulk Data export ($export kick-off, status, files), before the FHIR router.
  app.use(
    '/fhir',
    createExportRouter({
      ...exportViews,
      exports,
      logger,
      publicBaseUrl: config.publicBaseUrl,
      callerOf: (req) => exportCallerOf(req, config.exportApproval),
    }),
  );
  app.use(
    '/fhir',
    createFhirRouter({
      db,
      logger,
      publicBaseUrl: config.publicBaseUrl,
      accessFilter: fhirAccessFilter,
      // Granular scopes (user/Condition.cu?code=...) narrow what a write may change.
      writeFilter: fhirWriteFilter,
      // A conditional write searches what its token may read, no more.
      searchFilter: fhirSearchFilter,
      // Data managers read patient identifiers, telecom and addresses masked.
      fieldRules: fieldRulesOf,
      // PIs read the audit trail of their projects.
      projectsOf: fhirProjectsOf,
      onCreate: fhirCreateLinker,
      authorizeBundleEntry: bundleEntryDenial,
      auditInTransaction,
      // AuditEvent is read from the append-only audit trail; clients cannot write it (405).
      typeHandlers: { AuditEvent: createAuditEventTypeHandler({ knex: db.knex, settle: () => auditWriterFor(db.knex).flush() }) },
      // Condition codes are checked against ICD-10-CM; Group members against the group type.
      resourceRules: createResourceRules({ icd10cmCodesPath: config.icd10cmCodesPath }),
      privacy,
      maxDateOffsetDays: config.privacy.dateShiftMaxDays,
      // Pending ImagingStudy rewrites happen before any request that could read them.
      refreshDerived: (req) => imagingStudies.refreshFor(req),
      // A search checks for them in its own statement (one round trip less).
      deferRefresh: (req) => imagingStudies.deferredRefreshFor(req),
    }),
  );

  // De-identification options, burned-in clearances, re-identification workflow, overlap counts.
  app.use('/privacy', createPrivacyRouter({ knex: db.knex, privacy, auditSource: auth.audit.source, logger }));
  // Projects, their members, and the approval of cohort exports.
  app.use('/admin', createAdminRouter({ knex: db.knex, exports, logger, privacy, configuredDimsePeers: config.dimse?.peers }));

  app.use((req: Request, res: Response) => {
    res.status(404).json({ error: 'not found', path: req.path });
  });
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const status = typeof (err as { status?: number })?.status === 'number' ? (err as { status: number }).status : 500;
    if (status >= 500) logger.error({ err, url: loggableUrl(req.originalUrl) }, 'unhandled error');
    if (res.headersSent) return res.destroy();
    res.status(status).json({ error: status >= 500 ? 'internal error' : String((err as Error)?.message ?? err) });
  });
  return app;
}

/** What request log lines say about the request (no headers: they carry tokens and cookies). */
function serializeRequest(req: Request & { id?: unknown }): Record<string, unknown> {
  return {
    id: req.id,
    method: req.method,
    url: loggableUrl(req.originalUrl ?? req.url),
    remoteAddress: req.socket?.remoteAddress,
    userAgent: req.headers['user-agent'],
  };
}
