import { badRequest } from '../outcome';
import { parseDateRange, type DateRange } from './date-range';

/**
 * Parsing of search parameter values (FHIR R4 search 3.1.1.4-5): comma lists with escapes,
 * prefixes for ordered types, token system|code, quantity number|system|code.
 */

export const PREFIXES = ['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap'] as const;
export type Prefix = (typeof PREFIXES)[number];

/** Splits on commas not escaped with a backslash (3.1.1.6: "\," is a literal comma). */
export function splitOnUnescaped(text: string, separator: string): string[] {
  const parts: string[] = [];
  let current = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\\' && i + 1 < text.length) {
      current += c + text[i + 1];
      i++;
    } else if (c === separator) {
      parts.push(current);
      current = '';
    } else {
      current += c;
    }
  }
  parts.push(current);
  return parts;
}

/** Removes search escapes: \, \| \$ \\ become the literal character. */
export function unescapeValue(text: string): string {
  return text.replace(/\\([\\,|$])/g, '$1');
}

/** Splits an ordered value into its prefix (default eq) and the rest. */
export function splitPrefix(text: string): { prefix: Prefix; rest: string } {
  const m = /^(eq|ne|gt|lt|ge|le|sa|eb|ap)(?=[-+\d.])/.exec(text);
  return m ? { prefix: m[1] as Prefix, rest: text.slice(2) } : { prefix: 'eq', rest: text };
}

/** A date value: prefix and the implicit range of the value at its precision. */
export interface DateValue { prefix: Prefix; range: DateRange }

/** Parses `ge2013-01-14T10:00:00Z`; 400 when the date is malformed. */
export function parseDateValue(raw: string, param: string): DateValue {
  const { prefix, rest } = splitPrefix(raw);
  // An unescaped '+' of a time zone arrives as a space after URL decoding.
  const range = parseDateRange(rest.replace(/ (\d{2}:\d{2})$/, '+$1'));
  if (!range) throw badRequest(`Invalid date value '${raw}' for parameter ${param}`);
  return { prefix, range };
}

/** A number value with its implicit precision range [low, high) (3.1.1.4.5). */
export interface NumberValue { prefix: Prefix; value: number; low: number; high: number }

/** Parses `gt5.40`, `100`, `1e2`; 400 when not a number. */
export function parseNumberValue(raw: string, param: string): NumberValue {
  const { prefix, rest } = splitPrefix(raw);
  const text = rest.trim();
  if (!/^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw badRequest(`Invalid number value '${raw}' for parameter ${param}`);
  const value = Number(text);
  const [mantissa, exponent] = text.toLowerCase().split('e');
  const decimals = (mantissa.split('.')[1] ?? '').length - Number(exponent ?? 0);
  const half = 0.5 * 10 ** -decimals;
  return { prefix, value, low: value - half, high: value + half };
}

/** A quantity value: number plus optional system and code. */
export interface QuantityValue extends NumberValue { system?: string; code?: string }

/** Parses `5.4|http://unitsofmeasure.org|mg`, `5.4||mg`, `5.4`. */
export function parseQuantityValue(raw: string, param: string): QuantityValue {
  const parts = splitOnUnescaped(raw, '|');
  const num = parseNumberValue(parts[0], param);
  const system = parts[1] ? unescapeValue(parts[1]) : undefined;
  const code = parts[2] ? unescapeValue(parts[2]) : undefined;
  return { ...num, system, code };
}

/**
 * A token value (3.1.1.4.10). `system` undefined = any system; null = no system ("|code");
 * `code` undefined = any code ("system|").
 */
export interface TokenValue { system?: string | null; code?: string }

/** Parses `system|code`, `|code`, `system|`, `code`. */
export function parseTokenValue(raw: string): TokenValue {
  const parts = splitOnUnescaped(raw, '|');
  if (parts.length === 1) return { code: unescapeValue(parts[0]) };
  const system = unescapeValue(parts[0]);
  const code = unescapeValue(parts.slice(1).join('|'));
  return { system: system === '' ? null : system, code: code === '' ? undefined : code };
}

/** A reference value: type/id, id alone, or an absolute URL (3.1.1.4.12). */
export interface ReferenceValue { type?: string; id?: string; url?: string }

/** Parses `Patient/123`, `123`, `Patient/123/_history/2` or an absolute URL (made relative when it is ours). */
export function parseReferenceValue(raw: string, baseUrl?: string): ReferenceValue {
  let text = unescapeValue(raw).trim();
  if (baseUrl && text.startsWith(`${baseUrl}/`)) text = text.slice(baseUrl.length + 1);
  const m = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[A-Za-z0-9\-.]+)?$/.exec(text);
  if (m) return { type: m[1], id: m[2] };
  if (/^[a-z][a-z0-9+.-]*:/i.test(text)) return { url: text.split('|')[0] };
  return { id: text };
}
