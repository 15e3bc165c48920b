/**
 * The authenticator: verifies `Authorization: Bearer <token>` (RFC 6750 2.1) against our issuer
 * or the configured OIDC provider and attaches `req.principal`. Public paths pass without a
 * token. A missing token answers 401 with `WWW-Authenticate: Bearer realm="imaging-lake"`; a bad
 * one adds `error="invalid_token"` (RFC 6750 3.1). After a SAML sign-in the token may instead
 * come in the access-token cookie, accepted for GET and HEAD only (no cross-site writes).
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { AuthConfig } from './auth-config';
import { authErrorBody, TokenError, wwwAuthenticate } from './auth-errors';
import type { BearerVerifier } from './bearer-verifier';
import { isPublicPath } from './policy-routes';

/** Sends an access error shaped for the request's protocol (OperationOutcome, DICOM JSON, OAuth JSON). */
export function sendAuthError(req: Request, res: Response, status: 401 | 403, message: string, tokenError?: 'invalid_token' | 'insufficient_scope' | 'invalid_request'): void {
  const { contentType, body } = authErrorBody(req.originalUrl.split('?')[0], status, message);
  // The audit gate (when present) records why access was refused.
  if (res.locals.audit) res.locals.audit = { ...res.locals.audit, outcomeDescription: message.slice(0, 300) };
  res.setHeader('WWW-Authenticate', wwwAuthenticate(tokenError, tokenError ? message : undefined));
  res.setHeader('Cache-Control', 'no-store');
  res.status(status).type(contentType).send(body);
}

/** Reads the bearer token of a request: the Authorization header, else (safe methods) the cookie. */
export function bearerTokenOf(req: Request, cookieName: string): { token?: string; malformed?: boolean } {
  const header = req.headers.authorization;
  if (header !== undefined) {
    const m = /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)\s*$/i.exec(header);
    return m ? { token: m[1] } : { malformed: true };
  }
  if (req.method === 'GET' || req.method === 'HEAD') {
    const cookie = req.headers.cookie;
    if (cookie) {
      for (const part of cookie.split(';')) {
        const eq = part.indexOf('=');
        if (eq > 0 && part.slice(0, eq).trim() === cookieName) return { token: part.slice(eq + 1).trim() };
      }
    }
  }
  return {};
}

/** Options of the authenticator. */
export interface AuthenticatorOptions {
  /** More paths that need no token (exact matches). */
  publicPaths?: string[];
}

/** Express middleware verifying bearer tokens and attaching `req.principal`. */
export function createAuthenticator(deps: { verifier: BearerVerifier; config: Pick<AuthConfig, 'cookieName'> }, options: AuthenticatorOptions = {}): RequestHandler {
  const extraPublic = new Set(options.publicPaths ?? []);
  return (req: Request, res: Response, next: NextFunction) => {
    if (req.method === 'OPTIONS' && req.headers['access-control-request-method']) return next(); // CORS preflight
    const path = req.originalUrl.split('?')[0];
    const publicPath = isPublicPath(path) || extraPublic.has(path);
    const { token, malformed } = bearerTokenOf(req, deps.config.cookieName);
    if (malformed) return sendAuthError(req, res, 401, 'Authorization header is not a Bearer token', 'invalid_request');
    if (!token) {
      if (publicPath) return next();
      return sendAuthError(req, res, 401, 'authentication required: send Authorization: Bearer <token>');
    }
    deps.verifier.verify(token).then(
      (principal) => {
        req.principal = principal;
        next();
      },
      (err: unknown) => {
        if (err instanceof TokenError) {
          if (publicPath) return next(); // a stale token does not block public documents
          return sendAuthError(req, res, 401, err.message, 'invalid_token');
        }
        next(err);
      },
    );
  };
}
