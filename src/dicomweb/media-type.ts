/**
 * Media type parsing that is tolerant of what real DICOMweb clients send: quoted or unquoted
 * parameters, odd spacing, parameter names in any case (RFC 9110 8.3.1, PS3.18 8.7).
 */

export interface MediaType {
  /** type/subtype, lower case */
  type: string;
  /** parameter names lower case; values unquoted, case preserved */
  params: Record<string, string>;
}

/** Parses one media type such as `multipart/related; type="application/dicom"; boundary=abc`. */
export function parseMediaType(text: string | undefined): MediaType | null {
  if (!text) return null;
  const pieces = splitOutsideQuotes(text, ';');
  const type = pieces.shift()?.trim().toLowerCase();
  if (!type || !/^[\w!#$&^.+-]+\/[\w!#$&^.+-]+$/.test(type)) return null;
  const params: Record<string, string> = {};
  for (const piece of pieces) {
    const eq = piece.indexOf('=');
    if (eq <= 0) continue;
    const name = piece.slice(0, eq).trim().toLowerCase();
    params[name] = unquote(piece.slice(eq + 1).trim());
  }
  return { type, params };
}

/** Splits on `sep` except inside double quotes. */
export function splitOutsideQuotes(text: string, sep: string): string[] {
  const out: string[] = [];
  let current = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"' && text[i - 1] !== '\\') quoted = !quoted;
    if (c === sep && !quoted) {
      out.push(current);
      current = '';
    } else {
      current += c;
    }
  }
  out.push(current);
  return out;
}

function unquote(value: string): string {
  if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) {
    return value.slice(1, -1).replace(/\\(.)/g, '$1');
  }
  return value;
}
