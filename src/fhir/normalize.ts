/** Value normalisation shared by the index writer and the search query builder. */

/** Longest text kept in an index column (PostgreSQL btree entries must stay under ~2.7 kB). */
export const MAX_INDEX_TEXT = 512;

/**
 * FHIR R4 string search (3.1.1.4.8) is case- and accent-insensitive: lower case, diacritics
 * removed (NFKD then combining marks dropped), whitespace collapsed.
 */
export function normalizeSearchString(value: string): string {
  return value
    .normalize('NFKD')
    .replace(/\p{M}+/gu, '')
    .toLowerCase()
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, MAX_INDEX_TEXT);
}

/** Escapes LIKE wildcards so user input matches literally (with the default backslash escape). */
export function escapeLike(value: string): string {
  return value.replace(/[\\%_]/g, (c) => `\\${c}`);
}

/** Caps a text value for the index, dropping NUL bytes PostgreSQL text cannot hold. */
export function indexText(value: string): string {
  return value.replace(/\u0000/g, '').slice(0, MAX_INDEX_TEXT);
}
