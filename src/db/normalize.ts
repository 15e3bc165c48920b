/** Helpers that turn DICOM strings into the normalised forms the index stores. */

/** YYYYMMDD (or YYYY-MM-DD) -> 'YYYY-MM-DD', or null when it is not a real calendar date (PS3.5 6.2 DA). */
export function toSqlDate(value: string | null | undefined): string | null {
  if (!value) return null;
  const m = /^(\d{4})-?(\d{2})-?(\d{2})$/.exec(value.trim());
  if (!m) return null;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > 31) return null;
  const date = new Date(Date.UTC(y, mo - 1, d));
  if (date.getUTCMonth() !== mo - 1 || date.getUTCDate() !== d) return null;
  return `${m[1]}-${m[2]}-${m[3]}`;
}

/**
 * Person name for fuzzy matching: the alphabetic group, lower case, diacritics removed,
 * components kept in DICOM order separated by '^' (PS3.5 6.2 PN), so a component prefix
 * match is a plain LIKE 'doe^jo%' or a word prefix.
 */
export function normalizePersonName(name: string | null | undefined): string | null {
  if (!name) return null;
  const alphabetic = name.split('=')[0];
  const folded = alphabetic
    .normalize('NFKD')
    .replace(/\p{M}+/gu, '')
    .toLowerCase()
    .replace(/\s+/g, ' ')
    .trim();
  return folded || null;
}

/** A text column value: trimmed, empty -> null, NUL bytes removed (PostgreSQL text cannot hold them). */
export function textOrNull(value: string | null | undefined): string | null {
  if (value === null || value === undefined) return null;
  const cleaned = String(value).replace(/\u0000/g, '').trim();
  return cleaned === '' ? null : cleaned;
}

/** A 32-bit integer column value, or null when absent or out of range. */
export function intOrNull(value: number | null | undefined): number | null {
  if (value === null || value === undefined || !Number.isFinite(value)) return null;
  const n = Math.trunc(value);
  return n >= -2147483648 && n <= 2147483647 ? n : null;
}
