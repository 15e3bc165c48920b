/**
 * FHIR dates as half-open instants [low, high): the implicit range of a value at its precision
 * (FHIR R4 search 3.1.1.4.6: "2013-01" means the whole of January 2013). Values without a time
 * zone are read as UTC.
 */

/** A half-open range in epoch milliseconds; infinite bounds for open periods. */
export interface DateRange {
  low: number;
  high: number;
}

const DATE_RE = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

/** Parses a FHIR date, dateTime or instant into its implicit range, or undefined when malformed. */
export function parseDateRange(text: string): DateRange | undefined {
  const m = DATE_RE.exec(text.trim());
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  const year = Number(y);
  const month = mo ? Number(mo) : 1;
  const day = d ? Number(d) : 1;
  if (year < 1 || month < 1 || month > 12 || day < 1 || day > 31) return undefined;
  if (h !== undefined && (Number(h) > 24 || Number(mi) > 59 || (s !== undefined && Number(s) > 60))) return undefined;
  const offsetMs = tz && tz !== 'Z' ? (tz[0] === '-' ? -1 : 1) * (Number(tz.slice(1, 3)) * 60 + Number(tz.slice(4, 6))) * 60000 : 0;
  const utc = (yy: number, mm: number, dd: number, hh = 0, mn = 0, ss = 0, ms = 0) => {
    const date = new Date(0);
    date.setUTCFullYear(yy, mm - 1, dd);
    date.setUTCHours(hh, mn, ss, ms);
    return date.getTime();
  };
  if (d && new Date(utc(year, month, day)).getUTCDate() !== day) return undefined;
  let low: number;
  let high: number;
  if (!mo) {
    low = utc(year, 1, 1);
    high = utc(year + 1, 1, 1);
  } else if (!d) {
    low = utc(year, month, 1);
    high = month === 12 ? utc(year + 1, 1, 1) : utc(year, month + 1, 1);
  } else if (h === undefined) {
    low = utc(year, month, day);
    high = low + 86400000;
  } else {
    const fracMs = frac ? Number(`0${frac}`) * 1000 : 0;
    low = utc(year, month, day, Number(h), Number(mi), s ? Number(s) : 0, Math.floor(fracMs)) - offsetMs;
    const step = s === undefined ? 60000 : frac ? 10 ** (3 - Math.min(3, frac.length - 1)) : 1000;
    high = low + Math.max(1, step);
  }
  if (!Number.isFinite(low) || !Number.isFinite(high)) return undefined;
  return { low, high };
}

/** Bound as a PostgreSQL timestamptz literal ('-infinity'/'infinity' for open ends). */
export function toTimestamp(ms: number): string {
  if (ms === Number.NEGATIVE_INFINITY) return '-infinity';
  if (ms === Number.POSITIVE_INFINITY) return 'infinity';
  return new Date(ms).toISOString();
}
