import type { Request } from 'express';

/** `http://host:port` of a listening address (an IPv6 host in brackets, RFC 3986 3.2.2). */
export function originOf(host: string, port: number | string): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/**
 * The externally visible base URL of this server for links in responses (RetrieveURL,
 * BulkDataURI, FHIR links): PUBLIC_BASE_URL when configured, else rebuilt from the request,
 * honouring X-Forwarded-Proto/Host/Prefix so links work behind a reverse proxy.
 */
export function requestBaseUrl(req: Request, publicBaseUrl?: string): string {
  if (publicBaseUrl) return publicBaseUrl;
  const first = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v)?.split(',')[0]?.trim();
  const proto = first(req.headers['x-forwarded-proto']) || req.protocol || 'http';
  const host = first(req.headers['x-forwarded-host']) || req.headers.host || 'localhost';
  const prefix = (first(req.headers['x-forwarded-prefix']) || '').replace(/\/+$/, '');
  const safeProto = /^https?$/i.test(proto) ? proto.toLowerCase() : 'http';
  const safeHost = /^[A-Za-z0-9.\-:\[\]]+$/.test(host) ? host : 'localhost';
  const safePrefix = /^(\/[A-Za-z0-9._~\-]+)*$/.test(prefix) ? prefix : '';
  return `${safeProto}://${safeHost}${safePrefix}`;
}
