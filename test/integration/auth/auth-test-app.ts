/**
 * The real server (createApp on the TEST_DB engine) with the access layer composed in front of
 * it exactly as the lead will wire it in app.ts: auth router, then the guard, then the protocol
 * routers. A tiny stand-in FHIR route lets the FHIR side be exercised before src/fhir lands.
 */
import { randomUUID } from 'node:crypto';
import express, { type Express } from 'express';
import type { AuthConfig } from '../../../src/auth/auth-config';
import { createAccessGuard, type AccessLocals } from '../../../src/auth/access-guard';
import type { AuthServices } from '../../../src/auth/auth-services';
import { restrictedStudies, type StudyRestriction } from '../../../src/db/wado-index';
import { startTestApp, type TestApp } from '../../helpers/test-app';

export const ISSUER = 'http://il.test';
export const TOKEN_ENDPOINT = `${ISSUER}/oauth2/token`;

/** A composed server for access tests. */
export interface AuthTestApp {
  base: TestApp;
  auth: AuthServices;
  config: AuthConfig;
  http: Express;
  close(): Promise<void>;
}

/** Starts the app with the access layer in front; `authEnv` adds AUTH_* variables. */
export async function startAuthTestApp(authEnv: Record<string, string> = {}): Promise<AuthTestApp> {
  // The real app, whose own auth router and guard front every route, on our issuer and settings.
  const base = await startTestApp({ AUTH_ISSUER: ISSUER, ...authEnv });
  const config = base.config.auth;
  const auth = base.app.auth;
  const guard = createAccessGuard(auth);
  const http = express();
  http.disable('x-powered-by');
  // As app.ts does with pino-http: every request gets an id (X-Request-Id honoured), before the guard.
  http.use((req, res, next) => {
    const given = req.headers['x-request-id'];
    const id = typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) ? given : randomUUID();
    (req as typeof req & { id: string }).id = id;
    res.setHeader('X-Request-Id', id);
    next();
  });
  // Stand-in FHIR read behind the same guard: records the patient it touched, as the real routes do.
  http.get('/fhir/Patient/:id', ...guard, (req, res) => {
    const access = res.locals.access as AccessLocals;
    res.locals.audit = { ...res.locals.audit, patient: `Patient/${req.params.id}` };
    res.type('application/fhir+json').json({ resourceType: 'Patient', id: req.params.id, meta: { tag: [{ code: access.decision.view }] } });
  });
  // Probe: the studies visible through the restriction the guard put in res.locals, applied
  // with the same helper the WADO-RS index code uses.
  http.get('/dicomweb/probe/visible-studies', ...guard, async (_req, res) => {
    const knex = base.app.db.knex;
    const q = knex('studies').select('study_uid').orderBy('study_uid');
    if (res.locals.restrictStudies) q.whereIn('id', restrictedStudies(knex, res.locals.restrictStudies as StudyRestriction));
    res.json((await q).map((r: { study_uid: string }) => r.study_uid));
  });
  http.use(base.app.express);
  return {
    base,
    auth,
    config,
    http,
    async close() {
      await base.close();
    },
  };
}
