import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

/**
 * The ICD-10-CM code set (CMS/NCHS FY2021, public domain) as FHIR writes it: codes with the dot
 * after the third character (`H40.1131`), the form of http://hl7.org/fhir/sid/icd-10-cm in
 * HL7 Terminology and US Core. CMS's own files print codes without the dot (`H401131`); such a
 * code is rejected with a hint naming the dotted form rather than accepted, so that stored codes
 * and `code:below` prefixes (`H47.01`) always line up.
 */

/** The FHIR code system URI of ICD-10-CM. */
export const ICD10CM_SYSTEM = 'http://hl7.org/fhir/sid/icd-10-cm';

/** The compact copy shipped with the server (see fhir-profiles/terminology/README.md). */
export const DEFAULT_ICD10CM_CODES_PATH = path.resolve(__dirname, '../../../fhir-profiles/terminology/icd10cm-fy2021-codes.txt.gz');

/** A loaded code set: every valid code, and which of them are category headers (not billable). */
export interface Icd10cmCodeSet {
  /** Where it was read from. */
  readonly source: string;
  /** Number of codes (headers included). */
  readonly size: number;
  has(code: string): boolean;
  /** True for a category header such as `H47.01` (valid, but not billable). */
  isHeader(code: string): boolean;
  /** The dotted spelling of a code written without the dot or in lower case, when that is a code. */
  suggest(code: string): string | undefined;
}

const loaded = new Map<string, Icd10cmCodeSet>();

/**
 * Reads a code list once per process (later calls with the same path return the same set).
 * Accepts the compact form shipped here (one code a line, `*` marking a header; optionally
 * gzipped) and the shared TSV (`code<TAB>billable<TAB>...` with a header row). Throws with the
 * path in the message when the file is missing or holds no codes.
 */
export function loadIcd10cmCodes(file: string = DEFAULT_ICD10CM_CODES_PATH): Icd10cmCodeSet {
  const resolved = path.resolve(file);
  const cached = loaded.get(resolved);
  if (cached) return cached;
  let raw: Buffer;
  try {
    raw = fs.readFileSync(resolved);
  } catch (err) {
    throw new Error(`ICD-10-CM code list ${resolved} cannot be read: ${(err as Error).message}`);
  }
  const text = (resolved.endsWith('.gz') ? zlib.gunzipSync(raw) : raw).toString('utf8');
  const set = parseCodeList(text, resolved);
  if (set.size === 0) throw new Error(`ICD-10-CM code list ${resolved} holds no codes`);
  loaded.set(resolved, set);
  return set;
}

/** Parses either list format into a code set (exported for tests). */
export function parseCodeList(text: string, source = 'inline'): Icd10cmCodeSet {
  const codes = new Set<string>();
  const headers = new Set<string>();
  for (const line of text.split('\n')) {
    if (!line) continue;
    let code: string;
    let header: boolean;
    if (line.includes('\t')) {
      const [first, billable] = line.split('\t');
      code = first.trim();
      if (code === 'code') continue;
      header = billable?.trim() === '0';
    } else {
      header = line.endsWith('*');
      code = (header ? line.slice(0, -1) : line).trim();
    }
    if (!code) continue;
    codes.add(code);
    if (header) headers.add(code);
  }
  return {
    source,
    size: codes.size,
    has: (code) => codes.has(code),
    isHeader: (code) => headers.has(code),
    suggest(code) {
      const compact = code.trim().toUpperCase().replace(/\./g, '');
      const dotted = compact.length > 3 ? `${compact.slice(0, 3)}.${compact.slice(3)}` : compact;
      return dotted !== code && codes.has(dotted) ? dotted : undefined;
    },
  };
}
