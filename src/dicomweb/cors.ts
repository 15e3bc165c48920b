import type { NextFunction, Request, RequestHandler, Response } from 'express';

/**
 * CORS (Fetch standard, "CORS protocol") for browser viewers such as OHIF served from another
 * origin. Off unless origins are configured; `*` allows any origin. Bearer tokens travel in the
 * Authorization header, not cookies, so credentials mode is never needed.
 */

const ALLOWED_METHODS = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS';
/** Includes FHIR conditional and preference headers (If-Match, If-None-Exist, Prefer: R4 3.1.0.8-9), sent by browser apps too. */
const ALLOWED_HEADERS = 'Authorization, Accept, Content-Type, Range, If-Match, If-None-Match, If-Modified-Since, If-None-Exist, Prefer, X-Requested-With, X-Request-Id, X-Project';
const EXPOSED_HEADERS = 'Content-Range, Content-Length, Content-Type, Content-Location, Accept-Ranges, ETag, Last-Modified, Warning, Location, X-Request-Id';
const MAX_AGE_SECONDS = '600';

/**
 * Builds the CORS middleware: answers preflights (OPTIONS with Access-Control-Request-Method)
 * itself — 204 for an allowed origin, 403 with a JSON body otherwise — and adds the allow/expose
 * headers to other requests from an allowed origin. Mount it before any authentication, since
 * preflights carry no credentials.
 */
export function createCorsMiddleware(allowedOrigins: string[]): RequestHandler {
  const origins = new Set(allowedOrigins.map((o) => o.trim().replace(/\/+$/, '').toLowerCase()).filter(Boolean));
  const any = origins.has('*');
  if (origins.size === 0) return (_req, _res, next) => next();
  return (req: Request, res: Response, next: NextFunction) => {
    const origin = req.headers.origin;
    const preflight = req.method === 'OPTIONS' && origin !== undefined && req.headers['access-control-request-method'] !== undefined;
    if (!origin) return next();
    res.append('Vary', 'Origin');
    const allowed = any || origins.has(origin.toLowerCase());
    if (!allowed) {
      if (!preflight) return next(); // the browser withholds the answer; non-browser clients are unaffected
      res.status(403).json({ error: `origin ${origin.slice(0, 200)} is not allowed by this server's CORS configuration` });
      return;
    }
    res.setHeader('Access-Control-Allow-Origin', any ? '*' : origin);
    if (!preflight) {
      res.setHeader('Access-Control-Expose-Headers', EXPOSED_HEADERS);
      return next();
    }
    res.append('Vary', 'Access-Control-Request-Method, Access-Control-Request-Headers');
    res.setHeader('Access-Control-Allow-Methods', ALLOWED_METHODS);
    res.setHeader('Access-Control-Allow-Headers', ALLOWED_HEADERS);
    res.setHeader('Access-Control-Max-Age', MAX_AGE_SECONDS);
    res.status(204).end();
  };
}
