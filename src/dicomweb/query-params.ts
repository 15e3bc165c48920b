/**
 * QIDO-RS query parameters (PS3.18 8.3.4 and 10.6.1.2): `{attributeID}={value}` match keys,
 * `includefield`, `fuzzymatching`, `limit` and `offset`, parsed into a search without touching
 * the database. Anything ignored is reported as a warning; anything malformed is a 400.
 */
import type { QidoCondition, QidoLevel } from '../db/qido-search';
import { HttpError } from '../http/errors';
import { attributeSource, describeAttribute, findMatchKey, resolveAttributePath } from './query-keys';
import { parseMatchValue, QueryValueError } from './query-values';

/** Results per response when the request has no `limit`. */
export const DEFAULT_LIMIT = 1000;
/** Largest `limit` honoured; a larger one is reduced to this, with a warning. */
export const MAX_LIMIT = 10000;
/** Largest `offset` accepted: deeper paging is a scan, not a query. */
export const MAX_OFFSET = 100_000_000;

/** A parsed QIDO-RS query string. */
export interface QidoQuery {
  conditions: QidoCondition[];
  /** Top-level tags to return besides the defaults: match keys, empty-valued keys, includefield. */
  returnTags: Set<string>;
  /** `includefield=all`. */
  includeAll: boolean;
  fuzzy: boolean;
  limit: number;
  /** Whether the limit was chosen by the server (absent or capped): truncation is then worth a warning. */
  serverLimited: boolean;
  offset: number;
  warnings: string[];
}

type RawQuery = Record<string, unknown>;

const RESERVED = new Set(['limit', 'offset', 'fuzzymatching', 'includefield']);

/** Parses a query string object (express `req.query`) for a search whose results are at `level`. */
export function parseQidoQuery(query: RawQuery, level: QidoLevel): QidoQuery {
  const warnings: string[] = [];
  const fuzzy = parseFuzzy(values(query, 'fuzzymatching'));
  const { limit, serverLimited } = parseLimit(values(query, 'limit'), warnings);
  const offset = parseOffset(values(query, 'offset'));
  const returnTags = new Set<string>();
  let includeAll = false;

  for (const field of values(query, 'includefield').flatMap((v) => v.split(','))) {
    const id = field.trim();
    if (id === '') continue;
    if (id === 'all') {
      includeAll = true;
      continue;
    }
    const resolved = resolveAttributePath(id);
    if (!resolved.ok) {
      if (resolved.reason === 'malformed') throw new HttpError(400, `includefield "${id}" is not a DICOM keyword or an 8-digit hexadecimal tag`);
      warnings.push(`includefield "${id}" is not a known DICOM attribute and was ignored`);
      continue;
    }
    // A path into a sequence returns the whole top-level sequence.
    const tag = resolved.tag.split('.')[0];
    if (attributeSource(tag, level).from === 'unavailable') {
      warnings.push(`includefield ${describeAttribute(tag)} is not available at the ${level} level and was ignored`);
      continue;
    }
    returnTags.add(tag);
  }

  const conditions: QidoCondition[] = [];
  for (const name of Object.keys(query)) {
    if (RESERVED.has(name)) continue;
    const resolved = resolveAttributePath(name);
    if (!resolved.ok) {
      if (resolved.reason === 'malformed' && /^[0-9(]/.test(name)) {
        throw new HttpError(400, `query key "${name}" is not a DICOM keyword or an 8-digit hexadecimal tag`);
      }
      warnings.push(`query key "${name}" is not a known DICOM attribute or QIDO-RS parameter and was ignored`);
      continue;
    }
    const key = findMatchKey(resolved.tag);
    if (!key) {
      warnings.push(`${describeAttribute(resolved.tag)} is not supported as a match key and was ignored`);
      continue;
    }
    const topTag = key.tag.split('.')[0];
    if (key.returned && attributeSource(topTag, level).from !== 'unavailable') returnTags.add(topTag);
    for (const raw of values(query, name)) {
      let anyOf;
      try {
        anyOf = parseMatchValue(key, raw, fuzzy);
      } catch (err) {
        if (err instanceof QueryValueError) throw new HttpError(400, err.message);
        throw err;
      }
      if (anyOf && anyOf.length > 0) conditions.push({ column: key.column, anyOf });
    }
  }
  return { conditions, returnTags, includeAll, fuzzy, limit, serverLimited, offset, warnings };
}

/** Every value of a parameter, whether given once or repeated. */
function values(query: RawQuery, name: string): string[] {
  const v = query[name];
  if (v === undefined) return [];
  const list = Array.isArray(v) ? v : [v];
  return list.map((item) => {
    if (typeof item !== 'string') throw new HttpError(400, `query parameter "${name}" has a value that is not a string`);
    return item;
  });
}

function single(list: string[], name: string): string | undefined {
  if (list.length > 1) throw new HttpError(400, `query parameter "${name}" is given more than once`);
  return list[0];
}

function parseFuzzy(list: string[]): boolean {
  const v = single(list, 'fuzzymatching');
  if (v === undefined) return false;
  const lower = v.trim().toLowerCase();
  if (lower === 'true') return true;
  if (lower === 'false') return false;
  throw new HttpError(400, `fuzzymatching must be true or false, got "${v}"`);
}

function parseLimit(list: string[], warnings: string[]): { limit: number; serverLimited: boolean } {
  const v = single(list, 'limit');
  if (v === undefined) return { limit: DEFAULT_LIMIT, serverLimited: true };
  if (!/^\d{1,15}$/.test(v.trim()) || Number(v) < 1) throw new HttpError(400, `limit must be a positive integer, got "${v}"`);
  const n = Number(v);
  if (n > MAX_LIMIT) {
    warnings.push(`limit ${n} exceeds the maximum of ${MAX_LIMIT}; at most ${MAX_LIMIT} results are returned`);
    return { limit: MAX_LIMIT, serverLimited: true };
  }
  return { limit: n, serverLimited: false };
}

function parseOffset(list: string[]): number {
  const v = single(list, 'offset');
  if (v === undefined) return 0;
  if (!/^\d{1,15}$/.test(v.trim())) throw new HttpError(400, `offset must be a non-negative integer, got "${v}"`);
  const n = Number(v);
  if (n > MAX_OFFSET) throw new HttpError(400, `offset must not exceed ${MAX_OFFSET}`);
  return n;
}
