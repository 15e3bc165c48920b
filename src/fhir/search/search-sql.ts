import { badRequest } from '../outcome';
import { escapeLike, normalizeSearchString } from '../normalize';
import { IDENTIFIER_SUFFIX } from '../store/index-rows';
import { toTimestamp, type DateRange } from './date-range';
import type { SearchFilter, SearchRequest, SortRule } from './search-request';
import {
  parseDateValue,
  parseNumberValue,
  parseQuantityValue,
  parseReferenceValue,
  parseTokenValue,
  unescapeValue,
  type Prefix,
} from './search-values';

/**
 * Turns a parsed search into SQL over the index tables. Each filter is a semi-join
 * `r.rid IN (SELECT rid FROM fhir_<type> WHERE resource_type = ? AND param = ? AND ...)`
 * whose leading columns match the table's (resource_type, param, value) index.
 */
export interface Sql { sql: string; bindings: unknown[] }

const TABLE: Record<string, string> = {
  token: 'fhir_token',
  string: 'fhir_string',
  date: 'fhir_date',
  number: 'fhir_number',
  quantity: 'fhir_number',
  reference: 'fhir_reference',
  uri: 'fhir_uri',
};

/** Options that shape value interpretation. */
export interface SqlOptions {
  /** This server's FHIR base URL: absolute references to it are made relative. */
  baseUrl?: string;
  /** "Now", for the `ap` prefix (tests pin it). */
  now?: number;
}

let aliasCounter = 0;
const nextAlias = () => `x${++aliasCounter % 1000}`;

/** The WHERE conditions of a search over alias `r` (the resource table), ANDed. */
export function buildFilterSql(resourceType: string, filters: SearchFilter[], alias: string, options: SqlOptions, driveFirst = false): Sql {
  const parts: string[] = [];
  const bindings: unknown[] = [];
  let driven = !driveFirst;
  for (const f of filters) {
    const s = filterSql(resourceType, f, alias, options);
    const semi = `${alias}.rid IN (`;
    if (!driven && s.sql.startsWith(semi)) {
      // Evaluate this filter first, from its value index, and fetch the matches by rid: used
      // when every match is needed (custom sort, count), where the planner would otherwise
      // hash-join against a sequential scan of the resource table.
      parts.push(`${alias}.rid = ANY(ARRAY(${s.sql.slice(semi.length)})`);
      driven = true;
    } else parts.push(s.sql);
    bindings.push(...s.bindings);
  }
  return { sql: parts.length ? parts.join(' AND ') : 'TRUE', bindings };
}

function filterSql(resourceType: string, f: SearchFilter, r: string, options: SqlOptions): Sql {
  if (f.param.code === '_id') return idSql(f, r);
  if (f.param.code === '_lastUpdated') return lastUpdatedSql(f, r);
  const x = nextAlias();
  const isIdentifier = f.modifier === 'identifier';
  const table = isIdentifier ? 'fhir_token' : TABLE[f.param.type];
  const paramName = isIdentifier ? f.code + IDENTIFIER_SUFFIX : f.code;
  if (!table) throw badRequest(`Unsupported search parameter type ${f.param.type}`);

  if (f.modifier === 'missing') {
    const exists = `EXISTS (SELECT 1 FROM ${table} ${x} WHERE ${x}.rid = ${r}.rid AND ${x}.param = ?)`;
    return { sql: f.values[0] === 'true' ? `NOT ${exists}` : exists, bindings: [paramName] };
  }

  const ors: string[] = [];
  const bindings: unknown[] = [];
  for (const raw of f.values) {
    const c = f.chain ? chainSql(f, x, options) : isIdentifier ? tokenSql(x, raw, undefined) : valueSql(f, x, raw, options);
    ors.push(c.sql);
    bindings.push(...c.bindings);
  }
  const where = ors.length === 1 ? ors[0] : `(${ors.map((o) => `(${o})`).join(' OR ')})`;
  if (f.modifier === 'not') {
    return {
      sql: `NOT EXISTS (SELECT 1 FROM ${table} ${x} WHERE ${x}.rid = ${r}.rid AND ${x}.param = ? AND ${where})`,
      bindings: [paramName, ...bindings],
    };
  }
  return {
    sql: `${r}.rid IN (SELECT ${x}.rid FROM ${table} ${x} WHERE ${x}.resource_type = ? AND ${x}.param = ? AND ${where})`,
    bindings: [resourceType, paramName, ...bindings],
  };
}

function idSql(f: SearchFilter, r: string): Sql {
  if (f.modifier === 'missing') return { sql: f.values[0] === 'true' ? 'FALSE' : 'TRUE', bindings: [] };
  const ids = f.values.map(unescapeValue);
  return { sql: `${f.modifier === 'not' ? 'NOT ' : ''}${r}.id = ANY(?::text[])`, bindings: [ids] };
}

function lastUpdatedSql(f: SearchFilter, r: string): Sql {
  if (f.modifier === 'missing') return { sql: f.values[0] === 'true' ? 'FALSE' : 'TRUE', bindings: [] };
  const ors: string[] = [];
  const bindings: unknown[] = [];
  for (const raw of f.values) {
    const { prefix, range } = parseDateValue(raw, f.code);
    // An instant is the range [t, t + 1 ms).
    const c = rangeSql(prefix, range, `${r}.last_updated`, `(${r}.last_updated + interval '1 millisecond')`);
    ors.push(c.sql);
    bindings.push(...c.bindings);
  }
  return { sql: `(${ors.join(' OR ')})`, bindings };
}

function valueSql(f: SearchFilter, x: string, raw: string, options: SqlOptions): Sql {
  switch (f.param.type) {
    case 'string':
      return stringSql(x, raw, f.modifier);
    case 'token':
      return tokenSql(x, raw, f.modifier);
    case 'uri':
      return uriSql(x, raw, f.modifier);
    case 'date': {
      const { prefix, range } = parseDateValue(raw, f.code);
      return rangeSql(prefix, range, `${x}.low`, `${x}.high`, options.now);
    }
    case 'number': {
      const v = parseNumberValue(raw, f.code);
      return numberSql(x, v.prefix, v.value, v.low, v.high);
    }
    case 'quantity': {
      const v = parseQuantityValue(raw, f.code);
      const n = numberSql(x, v.prefix, v.value, v.low, v.high);
      const parts = [n.sql];
      const bindings = [...n.bindings];
      if (v.system) {
        parts.push(`${x}.system = ?`);
        bindings.push(v.system);
      }
      if (v.code) {
        parts.push(`${x}.code = ?`);
        bindings.push(v.code);
      }
      return { sql: parts.join(' AND '), bindings };
    }
    case 'reference':
      return referenceSql(f, x, raw, options);
    default:
      throw badRequest(`Unsupported search parameter type ${f.param.type}`);
  }
}

function stringSql(x: string, raw: string, modifier?: string): Sql {
  const text = unescapeValue(raw);
  if (modifier === 'exact') return { sql: `${x}.value = ? AND ${x}.exact = ?`, bindings: [normalizeSearchString(text), text] };
  const norm = escapeLike(normalizeSearchString(text));
  if (modifier === 'contains') return { sql: `${x}.value LIKE ?`, bindings: [`%${norm}%`] };
  return { sql: `${x}.value LIKE ?`, bindings: [`${norm}%`] };
}

/** Token match (3.1.1.4.10); `:below` is a code prefix (ICD-10 H47.01 matches H47.011), `:text` a word prefix of the display. */
export function tokenSql(x: string, raw: string, modifier?: string): Sql {
  if (modifier === 'text') {
    const norm = escapeLike(normalizeSearchString(unescapeValue(raw)));
    return { sql: `(${x}.text LIKE ? OR ${x}.text LIKE ?)`, bindings: [`${norm}%`, `% ${norm}%`] };
  }
  const t = parseTokenValue(raw);
  const parts: string[] = [];
  const bindings: unknown[] = [];
  if (t.code !== undefined) {
    if (modifier === 'below') {
      // A code prefix as a byte-order range (the text_pattern_ops operators of the code index):
      // the planner estimates ranges from statistics, where it badly underestimates LIKE 'p%'.
      const upper = prefixUpperBound(t.code);
      if (upper === null) {
        parts.push(`${x}.code LIKE ?`);
        bindings.push(`${escapeLike(t.code)}%`);
      } else {
        parts.push(`${x}.code ~>=~ ? AND ${x}.code ~<~ ?`);
        bindings.push(t.code, upper);
      }
    } else {
      parts.push(`${x}.code = ?`);
      bindings.push(t.code);
    }
  }
  if (t.system === null) parts.push(`${x}.system IS NULL`);
  else if (t.system !== undefined) {
    parts.push(`${x}.system = ?`);
    bindings.push(t.system);
  }
  if (parts.length === 0) throw badRequest(`Empty token value '${raw}'`);
  return { sql: parts.join(' AND '), bindings };
}

function uriSql(x: string, raw: string, modifier?: string): Sql {
  const v = unescapeValue(raw);
  if (modifier === 'below') return { sql: `${x}.value LIKE ?`, bindings: [`${escapeLike(v)}%`] };
  if (modifier === 'above') {
    const prefixes: string[] = [];
    for (let i = v.indexOf('/'); i >= 0; i = v.indexOf('/', i + 1)) prefixes.push(v.slice(0, i));
    prefixes.push(v);
    return { sql: `${x}.value = ANY(?::text[])`, bindings: [prefixes] };
  }
  return { sql: `${x}.value = ?`, bindings: [v] };
}

/**
 * Date comparison of a target range [low, high) with the search range (3.1.1.4.6):
 * eq = target within search; gt/lt = target extends beyond; ge/le = overlaps at or beyond;
 * sa/eb = wholly after/before; ap = overlaps the search range widened by 10% of its distance to now.
 */
export function rangeSql(prefix: Prefix, q: DateRange, low: string, high: string, now = Date.now()): Sql {
  const lo = toTimestamp(q.low);
  const hi = toTimestamp(q.high);
  switch (prefix) {
    case 'eq':
      // low < hi is implied by high <= hi but gives the (param, low) index a closed range.
      return { sql: `(${low} >= ?::timestamptz AND ${low} < ?::timestamptz AND ${high} <= ?::timestamptz)`, bindings: [lo, hi, hi] };
    case 'ne':
      return { sql: `(${low} < ?::timestamptz OR ${high} > ?::timestamptz)`, bindings: [lo, hi] };
    case 'gt':
      return { sql: `${high} > ?::timestamptz`, bindings: [hi] };
    case 'lt':
      return { sql: `${low} < ?::timestamptz`, bindings: [lo] };
    case 'ge':
      return { sql: `${high} > ?::timestamptz`, bindings: [lo] };
    case 'le':
      return { sql: `${low} < ?::timestamptz`, bindings: [hi] };
    case 'sa':
      return { sql: `${low} >= ?::timestamptz`, bindings: [hi] };
    case 'eb':
      return { sql: `${high} <= ?::timestamptz`, bindings: [lo] };
    case 'ap': {
      const spread = Math.max(Math.abs(now - q.low) * 0.1, 86400000);
      return { sql: `(${low} < ?::timestamptz AND ${high} > ?::timestamptz)`, bindings: [toTimestamp(q.high + spread), toTimestamp(q.low - spread)] };
    }
  }
}

/** Number comparison (3.1.1.4.5): eq/ne use the implicit precision range of the search value. */
export function numberSql(x: string, prefix: Prefix, value: number, low: number, high: number): Sql {
  const n = (v: number) => String(v);
  switch (prefix) {
    case 'eq':
      return { sql: `(${x}.low >= ?::numeric AND ${x}.low < ?::numeric AND ${x}.high < ?::numeric)`, bindings: [n(low), n(high), n(high)] };
    case 'ne':
      return { sql: `(${x}.low < ?::numeric OR ${x}.high >= ?::numeric)`, bindings: [n(low), n(high)] };
    case 'gt':
    case 'sa':
      return { sql: `${x}.high > ?::numeric`, bindings: [n(value)] };
    case 'lt':
    case 'eb':
      return { sql: `${x}.low < ?::numeric`, bindings: [n(value)] };
    case 'ge':
      return { sql: `${x}.high >= ?::numeric`, bindings: [n(value)] };
    case 'le':
      return { sql: `${x}.low <= ?::numeric`, bindings: [n(value)] };
    case 'ap': {
      const spread = Math.abs(value) * 0.1;
      return { sql: `(${x}.low <= ?::numeric AND ${x}.high >= ?::numeric)`, bindings: [n(value + spread), n(value - spread)] };
    }
  }
}

function referenceSql(f: SearchFilter, x: string, raw: string, options: SqlOptions): Sql {
  const v = parseReferenceValue(raw, options.baseUrl);
  if (v.url) return { sql: `${x}.target_id = ? AND ${x}.target_type IS NULL`, bindings: [v.url] };
  const type = v.type ?? (f.modifier && f.modifier !== 'identifier' ? f.modifier : undefined);
  if (v.type && f.modifier && f.modifier !== v.type) throw badRequest(`Reference ${raw} does not match modifier :${f.modifier}`);
  if (type) return { sql: `${x}.target_id = ? AND ${x}.target_type = ?`, bindings: [v.id, type] };
  return { sql: `${x}.target_id = ?`, bindings: [v.id] };
}

function chainSql(f: SearchFilter, x: string, options: SqlOptions): Sql {
  const ors: string[] = [];
  const bindings: unknown[] = [];
  for (const { targetType, filter } of f.chain ?? []) {
    const t = nextAlias();
    const inner = buildFilterSql(targetType, [filter], t, options);
    ors.push(
      `(${x}.target_type = ? AND ${x}.target_id IN (SELECT ${t}.id FROM fhir_resource ${t} WHERE ${t}.resource_type = ? AND NOT ${t}.deleted AND ${inner.sql}))`,
    );
    bindings.push(targetType, targetType, ...inner.bindings);
  }
  return { sql: ors.length === 1 ? ors[0] : `(${ors.join(' OR ')})`, bindings };
}

/** ORDER BY for `_sort` (3.1.1.5.3): per parameter, the lowest value ascending or the highest descending; ties by rid. */
export function buildOrderSql(sort: SortRule[], r: string): Sql {
  const parts: string[] = [];
  const bindings: unknown[] = [];
  for (const s of sort) {
    const dir = s.descending ? 'DESC' : 'ASC';
    if (s.code === '_id') parts.push(`${r}.id ${dir}`);
    else if (s.code === '_lastUpdated') parts.push(`${r}.last_updated ${dir}`);
    else {
      const table = TABLE[s.param.type];
      const agg = s.descending ? 'max' : 'min';
      const column = { token: 'code', string: 'value', date: s.descending ? 'high' : 'low', number: s.descending ? 'high' : 'low', quantity: s.descending ? 'high' : 'low', reference: 'target_id', uri: 'value' }[
        s.param.type as string
      ];
      if (!table || !column) continue;
      const x = nextAlias();
      parts.push(`(SELECT ${agg}(${x}.${column}) FROM ${table} ${x} WHERE ${x}.rid = ${r}.rid AND ${x}.param = ?) ${dir} NULLS LAST`);
      bindings.push(s.code);
    }
  }
  parts.push(`${r}.rid ASC`);
  return { sql: parts.join(', '), bindings };
}

/** The name of the page's rows (columns ord, rid, id, ...) in the statement of withPageParts. */
export const PAGE_ALIAS = 'page_rows';

/**
 * One statement for a page and what `parts` add to it: the page's rows (ord = their position)
 * as part 0, then the rows of each part (queries over the page, named PAGE_ALIAS, e.g. the first round
 * of `_include`) as parts 1, 2, ... Every row carries `part`, `ord` and the page query's columns.
 */
export function withPageParts(page: Sql, parts: Sql[]): Sql {
  if (parts.length === 0) return page;
  const m = PAGE_ALIAS;
  return {
    sql:
      `WITH ${m} AS MATERIALIZED (${page.sql}) ` +
      `SELECT 0 AS part, ${m}.ord, ${m}.rid, ${m}.resource_type, ${m}.id, ${m}.version_id, ${m}.last_updated, ${m}.deleted, ${m}.content FROM ${m}` +
      parts.map((part, i) => ` UNION ALL (SELECT ${i + 1} AS part, i.rid AS ord, i.* FROM (${part.sql}) i)`).join('') +
      ' ORDER BY part, ord',
    bindings: [...page.bindings, ...parts.flatMap((part) => part.bindings)],
  };
}

/**
 * The complete page query and, when asked, the count query. The page is chosen on rids alone
 * (an index-only walk of (resource_type, rid) when in rid order) and only its rows are then read
 * whole, by rid, in page order: skipping `_offset` rows or rows that fail a filter never fetches
 * their content.
 */
export function buildSearchSql(req: SearchRequest, access: Sql, options: SqlOptions): { page: Sql; count: Sql } {
  const from = (driveFirst: boolean) => {
    const where = buildFilterSql(req.resourceType, req.filters, 'r', options, driveFirst);
    return {
      sql: `FROM fhir_resource r WHERE r.resource_type = ? AND NOT r.deleted AND ${where.sql} AND ${access.sql}`,
      bindings: [req.resourceType, ...where.bindings, ...access.bindings],
    };
  };
  // Pages in rid order can stop early (LIMIT); sorted pages and counts need every match.
  const page = from(req.sort.length > 0);
  const count = from(true);
  const order = buildOrderSql(req.sort, 'r');
  return {
    page: {
      sql:
        `SELECT p.n AS ord, f.rid, f.resource_type, f.id, f.version_id, f.last_updated, f.deleted, f.content ` +
        `FROM unnest(ARRAY(SELECT r.rid ${page.sql} ORDER BY ${order.sql} LIMIT ? OFFSET ?)) WITH ORDINALITY AS p(rid, n) ` +
        `JOIN fhir_resource f ON f.rid = p.rid ORDER BY p.n`,
      bindings: [...page.bindings, ...order.bindings, req.count + 1, req.offset],
    },
    count: { sql: `SELECT count(*)::bigint AS total ${count.sql}`, bindings: count.bindings },
  };
}

/**
 * The smallest string greater (in byte order) than every string that starts with an ASCII
 * `prefix`: its last character incremented. Null for an empty or non-ASCII prefix (the
 * caller then matches with LIKE).
 */
export function prefixUpperBound(prefix: string): string | null {
  if (prefix === '' || /[^\x20-\x7e]/.test(prefix)) return null;
  const last = prefix.charCodeAt(prefix.length - 1);
  if (last >= 0x7e) return null;
  return prefix.slice(0, -1) + String.fromCharCode(last + 1);
}
