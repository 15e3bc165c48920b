import { normalizeSearchString } from '../normalize';
import type { DateRow, IndexRows, TokenRow } from '../store/index-rows';
import type { DateRange } from './date-range';
import type { SearchFilter } from './search-request';
import { parseDateValue, parseTokenValue, unescapeValue, type Prefix } from './search-values';

/**
 * A search filter evaluated in memory against the index rows of one resource that is not stored
 * (src/fhir/store/index-rows.ts `extractIndexRows`), with the semantics of the SQL the search
 * engine runs over the stored rows (search-sql.ts `filterSql`, `tokenSql`, `rangeSql`), so that a
 * resource matches here exactly when a search would find it once stored.
 *
 * Token (FHIR R4 search 3.1.1.4.10, with :missing, :not, :text and :below) and date (3.1.1.4.6)
 * parameters only: anything else, a chained parameter or a value the engine would refuse, gives
 * undefined ("cannot tell"), which a caller narrowing access must read as no match.
 */
export function matchFilter(filter: SearchFilter, rows: Pick<IndexRows, 'token' | 'date'>, now = Date.now()): boolean | undefined {
  if (filter.chain || filter.values.length === 0) return undefined;
  const type = filter.param.type;
  if (type !== 'token' && type !== 'date') return undefined;
  const own = (type === 'token' ? rows.token : rows.date).filter((r) => r.param === filter.code);
  if (filter.modifier === 'missing') return filter.values[0] === 'true' ? own.length === 0 : own.length > 0;
  const tests: Array<(row: TokenRow & DateRow) => boolean> = [];
  for (const raw of filter.values) {
    const test = type === 'token' ? tokenTest(raw, filter.modifier) : dateTest(raw, filter.code, filter.modifier, now);
    if (!test) return undefined;
    tests.push(test as (row: TokenRow & DateRow) => boolean);
  }
  const hit = own.some((row) => tests.some((t) => t(row as TokenRow & DateRow)));
  // `:not`: no row of the parameter matches any value (filterSql's NOT EXISTS).
  return filter.modifier === 'not' ? !hit : hit;
}

/** tokenSql in memory: `:text` a word prefix of the display, `:below` a code prefix, else the exact code; then the system. */
function tokenTest(raw: string, modifier: string | undefined): ((row: TokenRow) => boolean) | undefined {
  if (modifier !== undefined && modifier !== 'not' && modifier !== 'text' && modifier !== 'below') return undefined;
  if (modifier === 'text') {
    const norm = normalizeSearchString(unescapeValue(raw));
    return (row) => row.text !== null && (row.text.startsWith(norm) || row.text.includes(` ${norm}`));
  }
  const t = parseTokenValue(raw);
  if (t.code === undefined && t.system === undefined) return undefined;
  return (row) => {
    if (t.code !== undefined && (row.code === null || (modifier === 'below' ? !row.code.startsWith(t.code) : row.code !== t.code))) return false;
    if (t.system === null) return row.system === null;
    return t.system === undefined || row.system === t.system;
  };
}

/** rangeSql in memory: the target range [low, high) of the row against the search value's range. */
function dateTest(raw: string, code: string, modifier: string | undefined, now: number): ((row: DateRow) => boolean) | undefined {
  if (modifier !== undefined) return undefined;
  let prefix: Prefix;
  let q: DateRange;
  try {
    ({ prefix, range: q } = parseDateValue(raw, code));
  } catch {
    return undefined;
  }
  return (row) => {
    const low = instantOf(row.low);
    const high = instantOf(row.high);
    switch (prefix) {
      case 'eq':
        return low >= q.low && low < q.high && high <= q.high;
      case 'ne':
        return low < q.low || high > q.high;
      case 'gt':
        return high > q.high;
      case 'lt':
        return low < q.low;
      case 'ge':
        return high > q.low;
      case 'le':
        return low < q.high;
      case 'sa':
        return low >= q.high;
      case 'eb':
        return high <= q.low;
      case 'ap': {
        const spread = Math.max(Math.abs(now - q.low) * 0.1, 86400000);
        return low < q.high + spread && high > q.low - spread;
      }
    }
  };
}

/** A date row's bound (toTimestamp's text) as epoch milliseconds. */
function instantOf(text: string): number {
  if (text === '-infinity') return Number.NEGATIVE_INFINITY;
  if (text === 'infinity') return Number.POSITIVE_INFINITY;
  return Date.parse(text);
}
