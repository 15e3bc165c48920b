import type { FhirDefinitions, SearchParamDef, SearchParamType } from '../definitions';
import { badRequest } from '../outcome';
import { splitOnUnescaped } from './search-values';

/**
 * A parsed FHIR search (R4 3.1.1): filters ANDed across parameters, values ORed within one,
 * plus the result parameters (_sort, _count, _include, ...).
 */
export interface SearchFilter {
  code: string;
  param: SearchParamDef;
  /** exact, contains, missing, not, text, below, above, identifier, or a target resource type. */
  modifier?: string;
  /** For a chained reference: the filter to apply on each possible target type. */
  chain?: Array<{ targetType: string; filter: SearchFilter }>;
  /** Raw values (split on unescaped commas, still escaped inside). */
  values: string[];
}

export interface SortRule { code: string; param: SearchParamDef; descending: boolean }
export interface IncludeRule { resourceType: string; param: string; targetType?: string; iterate: boolean; wildcard: boolean }

export interface SearchRequest {
  resourceType: string;
  filters: SearchFilter[];
  sort: SortRule[];
  count: number;
  offset: number;
  total: 'none' | 'estimate' | 'accurate';
  summary?: 'true' | 'text' | 'data' | 'count' | 'false';
  elements?: string[];
  includes: IncludeRule[];
  revincludes: IncludeRule[];
  /** Parameters ignored under lenient handling, with why. */
  ignored: Array<{ name: string; reason: string }>;
  /** The parameters actually applied, in order, for the self link. */
  applied: Array<[string, string]>;
}

export const DEFAULT_COUNT = 20;
export const MAX_COUNT = 1000;

/** Modifiers we implement for each parameter type. */
const MODIFIERS: Record<SearchParamType, string[]> = {
  string: ['exact', 'contains', 'missing'],
  token: ['text', 'not', 'below', 'missing'],
  reference: ['missing', 'identifier'],
  date: ['missing'],
  number: ['missing'],
  quantity: ['missing'],
  uri: ['below', 'above', 'missing'],
  composite: [],
  special: [],
};

const RESULT_PARAMS = new Set(['_count', '_offset', '_sort', '_include', '_revinclude', '_summary', '_elements', '_total', '_format', '_pretty']);

/** Raised internally for a parameter the server does not know or support. */
class UnknownParameter extends Error {}

/**
 * Parses query parameters for a search on `resourceType`. Unknown or unsupported parameters
 * are a 400 under `strict` handling and ignored (and listed in `ignored`) otherwise; malformed
 * values of known parameters are always a 400.
 */
export function parseSearchRequest(
  defs: FhirDefinitions,
  resourceType: string,
  query: Record<string, string[]>,
  options: { strict?: boolean } = {},
): SearchRequest {
  const req: SearchRequest = {
    resourceType,
    filters: [],
    sort: [],
    count: DEFAULT_COUNT,
    offset: 0,
    total: 'none',
    includes: [],
    revincludes: [],
    ignored: [],
    applied: [],
  };
  const ignore = (name: string, reason: string) => {
    if (options.strict) throw badRequest(`${reason}: ${name}`);
    req.ignored.push({ name, reason });
  };
  for (const [key, values] of Object.entries(query)) {
    const baseKey = key.split(':')[0];
    for (const value of values) {
      if (RESULT_PARAMS.has(baseKey)) {
        parseResultParam(defs, req, key, value, ignore);
        continue;
      }
      try {
        const filter = parseFilter(defs, resourceType, key, value);
        if (filter.values.length === 0) continue;
        req.filters.push(filter);
        req.applied.push([key, value]);
      } catch (err) {
        if (err instanceof UnknownParameter) ignore(key, err.message);
        else throw err;
      }
    }
  }
  return req;
}

/** Parses one `key=value` into a filter; chained keys (`subject:Patient.name`) recurse on target types. */
export function parseFilter(defs: FhirDefinitions, resourceType: string, key: string, value: string): SearchFilter {
  const dot = key.indexOf('.');
  const head = dot >= 0 ? key.slice(0, dot) : key;
  const rest = dot >= 0 ? key.slice(dot + 1) : undefined;
  const [code, modifier, ...extra] = head.split(':');
  if (extra.length > 0) throw badRequest(`Invalid parameter name ${key}`);
  const param = defs.searchParams(resourceType).get(code);
  if (!param) throw new UnknownParameter(`Unknown search parameter for ${resourceType}`);
  if (param.type === 'composite' || param.type === 'special' || (!param.parsed && !['_id', '_lastUpdated'].includes(code))) {
    throw new UnknownParameter(`Unsupported search parameter (${param.type})`);
  }
  if (rest !== undefined) {
    if (param.type !== 'reference') throw badRequest(`Parameter ${code} is not a reference and cannot be chained`);
    const targets = modifier ? [modifier] : param.targets.length ? [...param.targets] : [];
    if (modifier && !defs.resourceTypes.has(modifier)) throw badRequest(`Unknown resource type ${modifier} in ${key}`);
    const chain: NonNullable<SearchFilter['chain']> = [];
    for (const t of targets) {
      try {
        chain.push({ targetType: t, filter: parseFilter(defs, t, rest, value) });
      } catch (err) {
        if (!(err instanceof UnknownParameter)) throw err;
      }
    }
    if (chain.length === 0) throw new UnknownParameter(`Chained parameter ${rest} is not defined on ${targets.join(', ') || 'any target'}`);
    return { code, param, chain, values: [value] };
  }
  if (modifier !== undefined) checkModifier(defs, param, modifier);
  const values = modifier === 'missing' ? [value] : splitOnUnescaped(value, ',').filter((v) => v !== '');
  if (modifier === 'missing' && value !== 'true' && value !== 'false') throw badRequest(`:missing takes true or false, not '${value}'`);
  return { code, param, modifier, values };
}

function checkModifier(defs: FhirDefinitions, param: SearchParamDef, modifier: string): void {
  if (param.code === '_id' || param.code === '_lastUpdated') {
    if (modifier === 'missing' || (param.code === '_id' && modifier === 'not')) return;
    throw badRequest(`Modifier :${modifier} is not supported on ${param.code}`);
  }
  if (param.type === 'reference' && defs.resourceTypes.has(modifier)) {
    if (param.targets.length && !param.targets.includes(modifier)) throw badRequest(`${modifier} is not a target of ${param.code}`);
    return;
  }
  if (!MODIFIERS[param.type].includes(modifier)) throw badRequest(`Modifier :${modifier} is not supported on ${param.type} parameter ${param.code}`);
}

function parseResultParam(
  defs: FhirDefinitions,
  req: SearchRequest,
  key: string,
  value: string,
  ignore: (name: string, reason: string) => void,
): void {
  const [name, modifier] = key.split(':');
  const int = (min: number) => {
    if (!/^\d+$/.test(value) || Number(value) < min) throw badRequest(`${name} must be an integer >= ${min}, not '${value}'`);
    return Number(value);
  };
  switch (name) {
    case '_count':
      req.count = Math.min(int(0), MAX_COUNT);
      return;
    case '_offset':
      req.offset = int(0);
      return;
    case '_total':
      if (!['none', 'estimate', 'accurate'].includes(value)) throw badRequest(`_total must be none, estimate or accurate`);
      req.total = value as SearchRequest['total'];
      req.applied.push([key, value]);
      return;
    case '_summary':
      if (!['true', 'text', 'data', 'count', 'false'].includes(value)) throw badRequest(`_summary must be true, text, data, count or false`);
      req.summary = value as SearchRequest['summary'];
      req.applied.push([key, value]);
      return;
    case '_elements':
      req.elements = value.split(',').map((e) => e.trim().replace(/^[A-Z][A-Za-z]+\./, '')).filter(Boolean);
      req.applied.push([key, value]);
      return;
    case '_sort':
      for (const item of value.split(',').map((s) => s.trim()).filter(Boolean)) {
        const descending = item.startsWith('-');
        const code = descending ? item.slice(1) : item;
        const param = defs.searchParams(req.resourceType).get(code);
        if (!param || param.type === 'composite' || param.type === 'special' || (!param.parsed && code !== '_id' && code !== '_lastUpdated')) {
          ignore(`_sort=${item}`, 'Unknown sort parameter');
          continue;
        }
        req.sort.push({ code, param, descending });
      }
      if (req.sort.length) req.applied.push([key, req.sort.map((s) => (s.descending ? '-' : '') + s.code).join(',')]);
      return;
    case '_include':
    case '_revinclude': {
      const iterate = modifier === 'iterate' || modifier === 'recurse';
      if (modifier && !iterate) throw badRequest(`Unknown modifier ${key}`);
      const rule = parseInclude(defs, req.resourceType, value, iterate, name === '_revinclude');
      if (typeof rule === 'string') {
        ignore(`${key}=${value}`, rule);
        return;
      }
      (name === '_include' ? req.includes : req.revincludes).push(rule);
      req.applied.push([key, value]);
      return;
    }
    default:
      return; // _format, _pretty: handled by the HTTP layer
  }
}

function parseInclude(defs: FhirDefinitions, searchType: string, value: string, iterate: boolean, reverse: boolean): IncludeRule | string {
  if (value === '*') return { resourceType: searchType, param: '*', iterate, wildcard: true };
  const [resourceType, param, targetType] = value.split(':');
  if (!resourceType || !param) return 'Invalid include (expected Type:param[:target])';
  if (!defs.resourceTypes.has(resourceType)) return 'Unknown resource type in include';
  if (!reverse && !iterate && resourceType !== searchType) return `_include source must be ${searchType}`;
  if (param === '*') return { resourceType, param, iterate, wildcard: true };
  const def = defs.searchParams(resourceType).get(param);
  if (!def || def.type !== 'reference') return 'Unknown reference parameter in include';
  if (targetType && !defs.resourceTypes.has(targetType)) return 'Unknown target type in include';
  return { resourceType, param, targetType, iterate, wildcard: false };
}
