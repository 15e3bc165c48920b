/**
 * The OAuth 2.0 / SMART / SAML endpoints: /oauth2/token, /oauth2/jwks, /oauth2/introspect,
 * /auth/saml/{login,callback,metadata}, and the SMART discovery documents. Every sign-in,
 * successful or not, is audited (DICOM 110114 User Authentication) before it is answered.
 */
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import { decodeJwt } from 'jose';
import { buildAuditEvent, type AuditInput } from '../audit/audit-event';
import { writeAuditEvent } from '../audit/audit-store';
import { OAuthError, TokenError, wwwAuthenticate } from './auth-errors';
import { issueAccessToken } from './access-token';
import type { AuthServices } from './auth-services';
import { bearerTokenOf } from './authenticator';
import { introspectToken } from './introspection';
import { defaultScopesForRole } from './roles';
import type { SamlIdentity } from './saml-login';
import { buildSmartConfiguration } from './smart-configuration';
import { exchangeClientCredentials } from './token-endpoint';

const NO_STORE = { 'Cache-Control': 'no-store', Pragma: 'no-cache' };

/** Mounts the access endpoints; `app.use(createAuthRouter(auth))` before the guard and the protocol routers. */
export function createAuthRouter(services: AuthServices): Router {
  const { config } = services;
  const router = express.Router();
  const form = express.urlencoded({ extended: false, limit: '64kb', parameterLimit: 50 });

  const recordLogin = async (req: Request, input: Omit<AuditInput, 'protocol' | 'action' | 'requestId'>) => {
    const requestId = (req as Request & { id?: unknown }).id;
    const event = buildAuditEvent(
      { protocol: 'auth', action: 'login', requestId: requestId === undefined ? undefined : String(requestId), ...input, agent: { address: req.ip, ...input.agent } },
      services.audit.source,
    );
    await writeAuditEvent(services.knex, event);
  };
  /** Writes the login audit; false (after answering 503) when the audit store failed. */
  const recordOr503 = async (req: Request, res: Response, input: Omit<AuditInput, 'protocol' | 'action' | 'requestId'>) => {
    try {
      await recordLogin(req, input);
      return true;
    } catch (err) {
      services.logger.error({ err }, 'audit write failed: sign-in refused');
      res.status(503).set(NO_STORE).set('Retry-After', '5').json({ error: 'temporarily_unavailable', error_description: 'audit trail unavailable' });
      return false;
    }
  };

  const discovery = (_req: Request, res: Response) => {
    res.set('Cache-Control', 'public, max-age=300').json(buildSmartConfiguration(config));
  };
  router.get('/.well-known/smart-configuration', discovery);
  router.get('/fhir/.well-known/smart-configuration', discovery);

  router.get('/oauth2/jwks', async (_req, res) => {
    res.set('Cache-Control', 'public, max-age=60').type('application/jwk-set+json').send(JSON.stringify(await services.keys.publicJwks()));
  });

  router.post('/oauth2/token', form, async (req, res) => {
    res.set(NO_STORE);
    const body = (req.body ?? {}) as Record<string, unknown>;
    try {
      const result = await exchangeClientCredentials(services, body);
      const ok = await recordOr503(req, res, {
        status: 200,
        agent: { subject: result.client.clientId, clientId: result.client.clientId, issuer: config.issuer, role: result.client.role, tokenId: result.tokenId },
        details: { method: 'client_credentials', scope: result.response.scope },
      });
      if (ok) res.status(200).json(result.response);
    } catch (err) {
      if (!(err instanceof OAuthError)) throw err;
      const ok = await recordOr503(req, res, {
        status: err.status,
        outcomeDescription: `${err.error}: ${err.description}`,
        agent: {},
        details: { method: 'client_credentials', claimed_client_id: claimedClientId(body.client_assertion) ?? 'unknown' },
      });
      if (ok) res.status(err.status).json({ error: err.error, error_description: err.description });
    }
  });

  router.post('/oauth2/introspect', form, async (req, res) => {
    res.set(NO_STORE);
    const { token: callerToken } = bearerTokenOf(req, '\0');
    const unauthorized = (error: 'invalid_token' | undefined, description: string) => {
      res.status(401).set('WWW-Authenticate', wwwAuthenticate(error, error ? description : undefined)).json({ error: error ?? 'invalid_request', error_description: description });
    };
    if (!callerToken) return unauthorized(undefined, 'introspection requires a bearer token');
    let caller;
    try {
      caller = await services.verifier.verify(callerToken);
    } catch (err) {
      if (err instanceof TokenError) return unauthorized('invalid_token', err.message);
      throw err;
    }
    const token = (req.body as Record<string, unknown> | undefined)?.token;
    if (typeof token !== 'string' || token === '') {
      res.status(400).json({ error: 'invalid_request', error_description: 'token is required' });
      return;
    }
    res.json(await introspectToken({ verifier: services.verifier, audience: config.audience }, caller, token));
  });

  const saml = services.saml;
  if (saml) {
    router.get('/auth/saml/login', (req, res, next) => {
      saml.passport.authenticate('saml', { session: false })(req, res, next);
    });
    router.get('/auth/saml/metadata', (_req, res) => {
      res.type('application/samlmetadata+xml').send(saml.metadata());
    });
    router.post('/auth/saml/callback', form, (req, res, next) => {
      const handle = async (err: unknown, user: unknown, info: unknown) => {
        if (err || !user) {
          const infra = Boolean(err && typeof (err as { code?: unknown }).code === 'string');
          const reason = err ? (err as Error).message : String((info as { message?: string } | undefined)?.message ?? 'sign-in refused');
          const ok = await recordOr503(req, res, { status: infra ? 503 : 401, outcomeDescription: `saml: ${reason}`.slice(0, 300), agent: {}, details: { method: 'saml' } });
          if (!ok) return;
          if (infra) {
            services.logger.error({ err }, 'SAML sign-in failed');
            res.status(503).set(NO_STORE).json({ error: 'temporarily_unavailable', error_description: 'sign-in could not be completed' });
            return;
          }
          res.status(401).set(NO_STORE).json({ error: 'access_denied', error_description: `SAML sign-in refused: ${reason}` });
          return;
        }
        const identity = user as SamlIdentity;
        const issued = await issueAccessToken(
          services,
          {
            subject: identity.subject,
            role: identity.role,
            scope: defaultScopesForRole(identity.role, 'user').join(' '),
            projects: identity.projects,
            facility: identity.facility,
            displayName: identity.displayName,
          },
          config.tokenTtlSeconds,
        );
        const ok = await recordOr503(req, res, {
          status: 200,
          agent: { subject: identity.subject, issuer: config.issuer, role: identity.role, displayName: identity.displayName, tokenId: issued.tokenId },
          details: { method: 'saml', idp: identity.idpIssuer ?? 'unknown' },
        });
        if (!ok) return;
        const cookie = [`${config.cookieName}=${issued.accessToken}`, 'Path=/', 'HttpOnly', 'SameSite=Lax', `Max-Age=${issued.expiresIn}`];
        if (config.cookieSecure) cookie.push('Secure');
        res.set(NO_STORE).append('Set-Cookie', cookie.join('; '));
        res.redirect(303, safeRelayState((req.body as Record<string, unknown> | undefined)?.RelayState));
      };
      saml.passport.authenticate('saml', { session: false }, (err: unknown, user: unknown, info: unknown) => {
        handle(err, user, info).catch(next);
      })(req, res, next);
    });
  } else {
    router.all(['/auth/saml/login', '/auth/saml/callback', '/auth/saml/metadata'], (_req, res) => {
      res.status(404).json({ error: 'not_configured', error_description: 'SAML sign-in is not configured on this server' });
    });
  }

  router.use((err: unknown, _req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) return next(err);
    const status = typeof (err as { status?: unknown })?.status === 'number' ? (err as { status: number }).status : 500;
    if (status >= 500) {
      services.logger.error({ err }, 'access endpoint failed');
      res.status(500).set(NO_STORE).json({ error: 'server_error', error_description: 'internal error' });
      return;
    }
    res.status(400).set(NO_STORE).json({ error: 'invalid_request', error_description: (err as Error).message ?? 'bad request' });
  });
  return router;
}

/** The `iss` an assertion claims, for the audit of a failed sign-in (never trusted for anything else). */
function claimedClientId(assertion: unknown): string | undefined {
  if (typeof assertion !== 'string') return undefined;
  try {
    const iss = decodeJwt(assertion).iss;
    return typeof iss === 'string' ? iss.slice(0, 128) : undefined;
  } catch {
    return undefined;
  }
}

/** Only same-origin relative paths are followed after sign-in (no open redirect). */
function safeRelayState(value: unknown): string {
  if (typeof value === 'string' && /^\/(?![/\\])[\x21-\x7e]*$/.test(value) && value.length <= 1024) return value;
  return '/';
}
