/**
 * Value-level rules of de-identification (PS3.15 E.1.1, E.3): date shifting for the Retain
 * Longitudinal Temporal Information with Modified Dates Option (E.3.6), dummy values per VR
 * (action D), ages over 89 (HIPAA 164.514(b)(2)(i)(C)), and cleaning of descriptors (E.3.11).
 */

import { addDaysToDate } from '../privacy/calendar';

/** Dummy values of action D, per VR (PS3.15 E.1.1: "a non-zero length value that may be a dummy value"). */
export const DUMMY_TEXT = 'ANONYMIZED';
const DUMMY_BY_VR: Readonly<Record<string, unknown>> = {
  AE: DUMMY_TEXT, CS: DUMMY_TEXT, LO: DUMMY_TEXT, LT: DUMMY_TEXT, SH: DUMMY_TEXT, ST: DUMMY_TEXT,
  UC: DUMMY_TEXT, UT: DUMMY_TEXT, UR: DUMMY_TEXT,
  PN: { Alphabetic: DUMMY_TEXT },
  DA: '19000101', TM: '000000', DT: '19000101000000', AS: '000Y',
  DS: 0, IS: 0, US: 0, SS: 0, UL: 0, SL: 0, FL: 0, FD: 0, SV: 0, UV: 0,
  AT: '00000000',
};

/** The dummy of a VR for DICOM JSON (binary VRs: two zero bytes as InlineBinary). */
export function dummyElement(vr: string): { vr: string; Value?: unknown[]; InlineBinary?: string } {
  const value = DUMMY_BY_VR[vr];
  if (value !== undefined) return { vr, Value: [value] };
  if (vr === 'SQ') return { vr, Value: [] };
  return { vr, InlineBinary: 'AAA=' };
}

/** Adds `days` to a YYYYMMDD date with exact calendar arithmetic (UTC), or null when it is not a date. */
export function shiftYmd(ymd: string, days: number): string | null {
  if (!/^\d{8}$/.test(ymd)) return null;
  const moved = addDaysToDate(Number(ymd.slice(0, 4)), Number(ymd.slice(4, 6)), Number(ymd.slice(6, 8)), days);
  if (!moved) return null;
  const [y, m, d] = moved;
  return `${String(y).padStart(4, '0')}${String(m).padStart(2, '0')}${String(d).padStart(2, '0')}`;
}

/**
 * Shifts a DA value (PS3.5 6.2: YYYYMMDD, legacy YYYY.MM.DD, or a range `A-B`, `-B`, `A-` as
 * query values carry them). Ranges stay ranges. Returns null for anything that is not a date:
 * such a value is dropped rather than passed through.
 */
export function shiftDate(value: string, days: number): string | null {
  const text = value.trim();
  if (text === '') return '';
  const dash = text.indexOf('-');
  if (dash >= 0) {
    const from = text.slice(0, dash);
    const to = text.slice(dash + 1);
    const a = from === '' ? '' : shiftDate(from, days);
    const b = to === '' ? '' : shiftDate(to, days);
    if (a === null || b === null || (a === '' && b === '')) return null;
    return `${a}-${b}`;
  }
  return shiftYmd(text.replace(/\./g, ''), days);
}

/**
 * Shifts a DT value (PS3.5 6.2: YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]): the date part moves by
 * whole days, the time and UTC offset are kept. Year-only and year-month values are shifted as
 * their first day and keep their precision. Ranges (`A-B`) stay ranges; a `-` directly after
 * the date part is a UTC offset, not a range.
 */
export function shiftDateTime(value: string, days: number): string | null {
  const text = value.trim();
  if (text === '') return '';
  const parts = splitDateTimeRange(text);
  if (parts) {
    const a = parts[0] === '' ? '' : shiftDateTime(parts[0], days);
    const b = parts[1] === '' ? '' : shiftDateTime(parts[1], days);
    if (a === null || b === null || (a === '' && b === '')) return null;
    return `${a}-${b}`;
  }
  const m = /^(\d{4})(\d{2})?(\d{2})?(\d{0,6}(?:\.\d{1,6})?)?([+-]\d{4})?$/.exec(text);
  if (!m) return null;
  const [, y, mo, d, time = '', offset = ''] = m;
  const full = shiftYmd(`${y}${mo ?? '01'}${d ?? '01'}`, days);
  if (full === null) return null;
  const date = d ? full : mo ? full.slice(0, 6) : full.slice(0, 4);
  if (time && !d) return null;
  return `${date}${time}${offset}`;
}

/** Splits a DT range at the dash that is not part of a UTC offset; null when it is a single value. */
function splitDateTimeRange(text: string): [string, string] | null {
  for (let i = 0; i < text.length; i++) {
    if (text[i] !== '-') continue;
    const before = text.slice(0, i);
    // `YYYYMMDDHHMMSS-0500` is a UTC offset: a plain date-time on the left, then four digits
    // that make a valid offset (-1200..+1400), at the end or before the range dash.
    const digits = text.slice(i + 1, i + 5);
    const isOffset = /^\d{4}$/.test(digits) && Number(digits.slice(0, 2)) <= 14 && Number(digits.slice(2)) < 60
      && /^\d{4,14}(\.\d{1,6})?$/.test(before) && (text.length === i + 5 || text[i + 5] === '-');
    if (!isOffset) return [before, text.slice(i + 1)];
  }
  return null;
}

/** Years a PS3.5 AS value (nnnD/W/M/Y) stands for, or null when malformed. */
export function ageInYears(as: string): number | null {
  const m = /^(\d{3})([DWMY])$/.exec(as.trim());
  if (!m) return null;
  const n = Number(m[1]);
  return m[2] === 'Y' ? n : m[2] === 'M' ? n / 12 : m[2] === 'W' ? (n * 7) / 365.25 : n / 365.25;
}

/** Patient's Age over 89 years becomes 090Y (HIPAA 164.514(b)(2)(i)(C): ages over 89 aggregated). Malformed ages are dropped (null). */
export function capAge(as: string): string | null {
  const years = ageInYears(as);
  if (years === null) return null;
  return years > 89 ? '090Y' : as.trim();
}

/**
 * Tokens that identify: the words of every value the profile removes or replaces (names, IDs,
 * addresses, accession numbers...), lower-cased. Clean Descriptors (PS3.15 E.3.11) drops any word
 * of a kept descriptor that contains one of them.
 */
export class IdentifyingTokens {
  private readonly tokens = new Set<string>();

  /** Adds the words of a removed value. */
  add(text: string): void {
    for (const word of text.toLowerCase().split(/[^\p{L}\p{N}_]+/u)) {
      if (word.length >= 3) this.tokens.add(word);
    }
  }

  /** True when a word contains an identifying token (or is one). */
  matches(word: string): boolean {
    const w = word.toLowerCase();
    for (const t of this.tokens) if (w.includes(t)) return true;
    return false;
  }

  get size(): number {
    return this.tokens.size;
  }
}

/**
 * Clean Descriptors (PS3.15 E.3.11): keeps the words of a free-text value that cannot identify.
 * Dropped, when in doubt: words containing a token of a removed identifying value (patient
 * name, IDs ...), words with four or more digits (dates, years, record numbers, phone numbers),
 * words with `@` (e-mail), and words with characters outside printable ASCII that we could not
 * re-encode faithfully. Returns '' when nothing is left.
 */
export function cleanText(text: string, tokens: IdentifyingTokens): string {
  const kept: string[] = [];
  for (const word of text.split(/[\s^\\=]+/)) {
    if (word === '') continue;
    if (/[^\x20-\x7e]/.test(word)) continue;
    if ((word.match(/\d/g)?.length ?? 0) >= 4) continue;
    if (word.includes('@')) continue;
    const bare = word.replace(/^[^\p{L}\p{N}]+|[^\p{L}\p{N}]+$/gu, '');
    if (bare !== '' && tokens.matches(bare)) continue;
    if (bare.split(/[^\p{L}\p{N}_]+/u).some((part) => part.length >= 3 && tokens.matches(part))) continue;
    kept.push(word);
  }
  return kept.join(' ');
}
