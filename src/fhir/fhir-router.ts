import { processBundle } from './bundle/bundle-service';
import { buildCapabilityStatement } from './capability';
import { parsePrefer, type FhirContext, type FhirRequest, type FhirResponse } from './http/fhir-request';
import {
  conditionalDelete,
  conditionalUpdate,
  createResource,
  deleteResource,
  readHistoryBundle,
  readResource,
  updateResource,
  vreadResource,
} from './interactions';
import { badRequest, fhirError, notFound } from './outcome';
import { parseSearchRequest } from './search/search-request';
import { searchToBundle, type SearchContext } from './search/search-service';
import { validateOperation } from './validate-operation';

/** The context of a routed request: a FhirContext, plus the caller's search view (de-identified callers) that every search, nested ones included, runs through. */
export type FhirRouteContext = FhirContext & Pick<SearchContext, 'searchView'>;

/**
 * The FHIR R4 REST router, express-free (STYLE 3): maps method and path to one interaction.
 * Every failure is an OperationOutcomeError carrying its HTTP status.
 */
export async function handleFhirRequest(ctx: FhirRouteContext, req: FhirRequest): Promise<FhirResponse> {
  let segments: string[];
  try {
    segments = req.path.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    throw badRequest(`Malformed path ${req.path}`);
  }
  const method = req.method === 'HEAD' ? 'GET' : req.method;
  const notAllowed = () => fhirError(405, 'not-supported', `${req.method} is not allowed on ${req.path}`);
  const [first, second, third, fourth] = segments;

  if (segments.length === 0) {
    if (method === 'POST') return processBundle(ctx, req, handleFhirRequest);
    throw notAllowed();
  }
  if (first === 'metadata' && segments.length === 1) {
    if (method !== 'GET') throw notAllowed();
    return { status: 200, headers: {}, body: buildCapabilityStatement(ctx.defs, ctx.baseUrl) };
  }
  if (first === '_history' && segments.length === 1) {
    if (method !== 'GET') throw notAllowed();
    return readHistoryBundle(ctx, req);
  }
  if (!ctx.defs.resourceTypes.has(first)) throw notFound(`Unknown resource type or endpoint: ${first}`);
  const handler = ctx.typeHandlers?.[first];
  if (handler) {
    // A refresh left to the search service is done here: the handler reads on its own.
    if (ctx.deferredRefresh) await ctx.deferredRefresh.refresh();
    return handler({ ...ctx, deferredRefresh: undefined }, req);
  }
  const type = first;

  if (segments.length === 1) {
    switch (method) {
      case 'GET':
        return search(ctx, req, type, req.query);
      case 'POST':
        return createResource(ctx, req, type);
      case 'PUT':
        if (Object.keys(req.query).length === 0) throw badRequest('PUT on a type needs search criteria (conditional update) or an id in the URL');
        return conditionalUpdate(ctx, req, type);
      case 'DELETE':
        if (Object.keys(req.query).length === 0) throw badRequest('DELETE on a type needs search criteria (conditional delete)');
        return conditionalDelete(ctx, req, type);
      default:
        throw notAllowed();
    }
  }
  if (segments.length === 2 && second === '_search') {
    if (method !== 'POST') throw notAllowed();
    return search(ctx, req, type, mergeParams(req.query, formParams(req.body)));
  }
  if (segments.length === 2 && second === '_history') {
    if (method !== 'GET') throw notAllowed();
    return readHistoryBundle(ctx, req, type);
  }
  if (segments.length === 2 && second === '$validate') {
    if (method !== 'POST') throw notAllowed();
    return validateOperation(ctx, req, type);
  }
  const id = second;
  if (segments.length === 2) {
    switch (method) {
      case 'GET':
        return readResource(ctx, req, type, id);
      case 'PUT':
        return updateResource(ctx, req, type, id);
      case 'DELETE':
        return deleteResource(ctx, req, type, id);
      default:
        throw notAllowed();
    }
  }
  if (segments.length === 3 && third === '$validate') {
    if (method !== 'POST' && method !== 'GET') throw notAllowed();
    return validateOperation(ctx, req, type, id);
  }
  if (third === '_history' && segments.length <= 4) {
    if (method !== 'GET') throw notAllowed();
    return fourth === undefined ? readHistoryBundle(ctx, req, type, id) : vreadResource(ctx, type, id, fourth);
  }
  throw notFound(`No such endpoint: ${req.path}`);
}

async function search(ctx: FhirContext, req: FhirRequest, type: string, query: Record<string, string[]>): Promise<FhirResponse> {
  const strict = parsePrefer(req.headers.prefer).handling === 'strict';
  const parsed = parseSearchRequest(ctx.defs, type, query, { strict });
  return { status: 200, headers: {}, body: await searchToBundle(ctx, parsed) };
}

function formParams(body: unknown): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  if (!body || typeof body !== 'object') return out;
  for (const [k, v] of Object.entries(body as Record<string, unknown>)) {
    const list = Array.isArray(v) ? v : [v];
    out[k] = list.filter((x) => typeof x === 'string') as string[];
  }
  return out;
}

function mergeParams(a: Record<string, string[]>, b: Record<string, string[]>): Record<string, string[]> {
  const out: Record<string, string[]> = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = [...(out[k] ?? []), ...v];
  return out;
}
