/**
 * Retrieve Capabilities (PS3.18 8.9): `GET` or `OPTIONS` on the service root answers what this
 * server offers, built from `dicomweb/capabilities.json`, `media-types.json` and
 * `query-keys.json`. Honest by construction: a transaction is listed only when its method and
 * path are routed on the router at the time of the request.
 */
import type { Request, Response, Router } from 'express';
import capabilities from '../../dicomweb/capabilities.json';
import queryKeys from '../../dicomweb/query-keys.json';
import { requestBaseUrl } from '../http/base-url';
import { knownTransferSyntaxes, notAcceptable, parseAccept, rangeCovers } from './accept';

interface ResourceEntry {
  transaction: string;
  section: string | null;
  method: string;
  path: string;
  mediaTypes: string[];
  requestMediaTypes?: string[];
  queryLevel?: string;
  httpRange?: boolean;
}

/** The service description as JSON. */
export interface ServiceDescription {
  service: string;
  standard: string;
  baseUrl: string;
  resources: ResourceEntry[];
  transferSyntaxes: Array<{ uid: string; name: string; frameMediaType: string }>;
  queryKeys?: Record<string, Array<{ keyword: string; tag: string }>>;
  accept: Record<string, unknown>;
}

/** Express path of a URI template: `{name}` -> `:name`, `{name*}` -> `*name`. */
export function templateToRoute(template: string): string {
  return template.replace(/\{(\w+)\*\}/g, '*$1').replace(/\{(\w+)\}/g, ':$1');
}

/** Method + path pairs routed on `router` (express 5 layers). */
function routedPairs(router: Router): Set<string> {
  const pairs = new Set<string>();
  for (const layer of (router as unknown as { stack: Array<{ route?: { path: string; methods: Record<string, boolean> } }> }).stack) {
    if (!layer.route) continue;
    for (const [method, on] of Object.entries(layer.route.methods)) if (on) pairs.add(`${method.toUpperCase()} ${layer.route.path}`);
  }
  return pairs;
}

/** Builds the description of what `router` serves, rooted at `baseUrl` (`https://host/dicomweb`). */
export function describeService(router: Router, baseUrl: string): ServiceDescription {
  const routed = routedPairs(router);
  const resources = (capabilities.resources as ResourceEntry[]).filter((r) => routed.has(`${r.method} ${templateToRoute(r.path)}`));
  const levels = new Set(resources.map((r) => r.queryLevel).filter(Boolean) as string[]);
  const keys = queryKeys as unknown as Record<string, { keys: Array<{ keyword: string; tag: string }> }>;
  return {
    service: capabilities.service,
    standard: capabilities.standard,
    baseUrl,
    resources,
    transferSyntaxes: knownTransferSyntaxes().map((t) => ({ uid: t.uid, name: t.name, frameMediaType: t.mediaType })),
    ...(levels.size
      ? { queryKeys: Object.fromEntries([...levels].map((l) => [l, (keys[l]?.keys ?? []).map((k) => ({ keyword: k.keyword, tag: k.tag }))])) }
      : {}),
    accept: capabilities.accept,
  };
}

/** The description as a WADL document (PS3.18 8.9.1: application/vnd.sun.wadl+xml). */
export function renderWadl(d: ServiceDescription): string {
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
  const byPath = new Map<string, ResourceEntry[]>();
  for (const r of d.resources) byPath.set(r.path, [...(byPath.get(r.path) ?? []), r]);
  const resources = [...byPath.entries()].map(([path, entries]) => {
    const methods = entries.map((r) => {
      const reps = r.mediaTypes.map((m) => `<representation mediaType="${esc(m)}"/>`).join('');
      const req = r.requestMediaTypes?.map((m) => `<representation mediaType="${esc(m)}"/>`).join('') ?? '';
      return `<method name="${r.method}" id="${esc(r.transaction.replace(/[^A-Za-z]/g, ''))}">${req ? `<request>${req}</request>` : ''}<response>${reps}</response></method>`;
    });
    return `<resource path="${esc(path.replace(/^\//, '').replace(/\*\}/g, '}'))}">${methods.join('')}</resource>`;
  });
  return `<?xml version="1.0" encoding="UTF-8"?>\n<application xmlns="http://wadl.dev.java.net/2009/02"><doc title="${esc(d.service)}"/><resources base="${esc(d.baseUrl)}/">${resources.join('')}</resources></application>\n`;
}

const WADL = 'application/vnd.sun.wadl+xml';

/** Registers `GET /` and `OPTIONS /` (the Capabilities transaction) on the DICOMweb router. */
export function registerCapabilitiesRoutes(router: Router, services: { publicBaseUrl?: string }): void {
  const answer = (req: Request, res: Response) => {
    const description = describeService(router, `${requestBaseUrl(req, services.publicBaseUrl)}/dicomweb`);
    const ranges = parseAccept(req.headers.accept, req.query.accept);
    // WADL is the standard's form (and the answer to wildcards); JSON when asked for by name.
    const chosen = ranges.find((r) => r.type === 'application/json' || rangeCovers(r.type, WADL));
    res.setHeader('Allow', 'GET, HEAD, OPTIONS');
    if (!chosen) {
      throw notAcceptable(ranges, `the capabilities are offered as ${WADL} or application/json`);
    } else if (chosen.type === 'application/json') {
      res.status(200).json(description);
    } else {
      res.status(200).type(WADL).send(renderWadl(description));
    }
  };
  router.get('/', answer);
  router.options('/', answer);
}
