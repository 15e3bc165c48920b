/**
 * Match values of QIDO-RS query keys (PS3.18 8.3.4, PS3.4 C.2.2.2): single values, UID lists,
 * wildcards, date/time ranges and fuzzy person names, turned into column matches. A value
 * that cannot be understood is an error (400), never a silently different query.
 */
import type { QidoMatch } from '../db/qido-search';
import { normalizePersonName, toSqlDate } from '../db/normalize';
import type { MatchKey } from './query-keys';

/** A query value the server cannot interpret; the message names the key and the value. */
export class QueryValueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'QueryValueError';
  }
}

/**
 * Parses one `{attributeID}={value}` value for a key. Returns null for universal matching
 * (an empty value or `*`, PS3.4 C.2.2.2.3), else the matches to OR.
 */
export function parseMatchValue(key: MatchKey, raw: string, fuzzy: boolean): QidoMatch[] | null {
  const value = raw.trim();
  if (value === '' || /^\*+$/.test(value)) return null;
  switch (key.column.kind) {
    case 'date':
      return [parseRange(key, value, parseDate)];
    case 'time':
      return [parseRange(key, value, parseTime)];
    case 'datetime':
      return [parseRange(key, value, parseDateTime)];
    case 'integer':
      return splitList(value, /[\\,]/).map((v) => ({ type: 'equal', value: parseInteger(key, v) }));
    default:
      break;
  }
  if (key.vr === 'UI') {
    // PS3.4 C.2.2.2.2: a list of UIDs, comma (PS3.18 8.3.4.1) or backslash separated; no wildcards.
    return splitList(value, /[\\,]/).map((uid) => {
      if (/[*?]/.test(uid)) throw new QueryValueError(`${key.keyword}: wildcards are not allowed in UID matching, got "${uid}"`);
      if (uid.length > 64) throw new QueryValueError(`${key.keyword}: "${uid.slice(0, 80)}..." is longer than a UID can be (64)`);
      return { type: 'equal', value: uid };
    });
  }
  const values = splitList(value, /\\/);
  if (values.some((v) => /^\*+$/.test(v))) return null;
  if (key.vr === 'PN' && fuzzy) return values.map((v) => fuzzyWords(key, v)).filter((m): m is QidoMatch => m !== null);
  return values.map((v) => textMatch(key, v));
}

function splitList(value: string, separator: RegExp): string[] {
  const parts = value.split(separator).map((v) => v.trim());
  if (parts.some((p) => p === '')) throw new QueryValueError(`empty value in the list "${value}"`);
  return parts;
}

function textMatch(key: MatchKey, raw: string): QidoMatch {
  const value = key.column.kind === 'person-name' ? (normalizePersonName(raw) ?? '') : raw;
  if (/[*?]/.test(value)) return { type: 'wildcard', pattern: toLikePattern(value) };
  return { type: 'equal', value };
}

/**
 * Fuzzy person-name matching: every word of the value must be the beginning of some word of
 * the name, whatever the case and accents (PS3.4 C.2.2.2.1 leaves fuzzy semantics to the SCP).
 */
function fuzzyWords(key: MatchKey, raw: string): QidoMatch | null {
  const folded = key.column.kind === 'person-name' ? (normalizePersonName(raw) ?? '') : raw.toLowerCase();
  const words = folded.split(/[^\p{L}\p{N}]+/u).filter((w) => w !== '');
  if (words.length === 0) return null;
  return { type: 'words', words };
}

/** `*` -> `%`, `?` -> `_`, with LIKE's own metacharacters escaped (PS3.4 C.2.2.2.4). */
export function toLikePattern(value: string): string {
  return value.replace(/[\\%_]/g, (c) => `\\${c}`).replace(/\*/g, '%').replace(/\?/g, '_');
}

function parseInteger(key: MatchKey, value: string): number {
  if (!/^[+-]?\d{1,10}$/.test(value)) throw new QueryValueError(`${key.keyword}: "${value}" is not an integer (${key.vr})`);
  const n = Number(value);
  if (n < -2147483648 || n > 2147483647) throw new QueryValueError(`${key.keyword}: ${value} is out of range`);
  return n;
}

type BoundParser = (key: MatchKey, value: string) => string;

/** `a`, `a-`, `-b` or `a-b` (PS3.4 C.2.2.2.5); a single value is a range at its own precision. */
function parseRange(key: MatchKey, value: string, parse: BoundParser): QidoMatch {
  if (value.includes('\\')) throw new QueryValueError(`${key.keyword}: a list of ${key.vr} values is not supported; use a range`);
  const parts = value.split('-');
  if (parts.length === 1) {
    const v = parse(key, value);
    return key.column.kind === 'date' ? { type: 'equal', value: v } : { type: 'range', from: v, to: v };
  }
  if (parts.length !== 2 || (parts[0] === '' && parts[1] === '')) {
    throw new QueryValueError(`${key.keyword}: "${value}" is not a ${key.vr} value or range`);
  }
  const from = parts[0] === '' ? undefined : parse(key, parts[0].trim());
  const to = parts[1] === '' ? undefined : parse(key, parts[1].trim());
  if (from !== undefined && to !== undefined && from > to && !from.startsWith(to)) {
    throw new QueryValueError(`${key.keyword}: the range "${value}" ends before it starts`);
  }
  return { type: 'range', from, to };
}

/** DA: YYYYMMDD, a real calendar date (PS3.5 6.2). */
function parseDate(key: MatchKey, value: string): string {
  const date = /^\d{8}$/.test(value) ? toSqlDate(value) : null;
  if (!date) throw new QueryValueError(`${key.keyword}: "${value}" is not a date (YYYYMMDD)`);
  return date;
}

/** TM: HH, HHMM, HHMMSS or HHMMSS.F{1,6} (PS3.5 6.2); the ACR-NEMA form HH:MM:SS is accepted too. */
function parseTime(key: MatchKey, value: string): string {
  const v = /^\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?$/.test(value) ? value.replace(/:/g, '') : value;
  const m = /^(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?$/.exec(v);
  const valid = m && Number(m[1]) < 24 && (m[2] === undefined || Number(m[2]) < 60) && (m[3] === undefined || Number(m[3]) < 61) && (m[4] === undefined || m[3] !== undefined);
  if (!valid) throw new QueryValueError(`${key.keyword}: "${value}" is not a time (HHMMSS.FFFFFF)`);
  return v;
}

/** DT: YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]] (PS3.5 6.2); offsets from UTC are refused rather than ignored. */
function parseDateTime(key: MatchKey, value: string): string {
  if (/[+&]|\d-\d{4}$/.test(value) || / \d{4}$/.test(value)) {
    throw new QueryValueError(`${key.keyword}: UTC offsets in ${key.vr} match values are not supported ("${value}")`);
  }
  const m = /^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?$/.exec(value);
  const ok =
    m &&
    (m[2] === undefined || (Number(m[2]) >= 1 && Number(m[2]) <= 12)) &&
    (m[3] === undefined || toSqlDate(`${m[1]}${m[2]}${m[3]}`) !== null) &&
    (m[4] === undefined || Number(m[4]) < 24) &&
    (m[5] === undefined || Number(m[5]) < 60) &&
    (m[6] === undefined || Number(m[6]) < 61) &&
    (m[7] === undefined || m[6] !== undefined);
  if (!ok) throw new QueryValueError(`${key.keyword}: "${value}" is not a date-time (YYYYMMDDHHMMSS.FFFFFF)`);
  return value;
}
