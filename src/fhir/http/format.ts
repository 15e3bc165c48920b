import { fhirError } from '../outcome';

/**
 * Content negotiation (FHIR R4 http 3.1.0.1.10): JSON only. `_format` overrides Accept;
 * an XML (or other) request for the response is 406, an XML body is 415.
 */
const JSON_FORMATS = new Set(['json', 'application/json', 'application/fhir+json', 'application/json+fhir', 'text/json']);
const ACCEPTABLE = new Set([...JSON_FORMATS, '*/*', 'application/*']);

/** The response media type, or a 406 OperationOutcomeError. */
export function negotiateResponseType(format: string | undefined, accept: string | undefined): string {
  const fhirJson = 'application/fhir+json; charset=utf-8';
  const plainJson = 'application/json; charset=utf-8';
  if (format !== undefined) {
    const f = format.split(';')[0].trim().toLowerCase();
    if (!JSON_FORMATS.has(f)) throw fhirError(406, 'not-supported', `_format ${format} is not supported; this server speaks application/fhir+json only`);
    return f === 'application/json' ? plainJson : fhirJson;
  }
  if (!accept || !accept.trim()) return fhirJson;
  const types = accept.split(',').map((t) => t.split(';')[0].trim().toLowerCase());
  if (!types.some((t) => ACCEPTABLE.has(t))) throw fhirError(406, 'not-supported', `Accept ${accept} is not supported; this server speaks application/fhir+json only`);
  if (types.includes('application/json') && !types.includes('application/fhir+json') && !types.includes('application/json+fhir')) return plainJson;
  return fhirJson;
}

/** True for request bodies we parse as FHIR JSON (a missing Content-Type is read as JSON). */
export function isJsonContentType(contentType: string | undefined): boolean {
  if (!contentType) return true;
  const t = contentType.split(';')[0].trim().toLowerCase();
  return JSON_FORMATS.has(t) || t === 'application/json-patch+json';
}

/** 415 unless the body is JSON (or a form, for POST _search). */
export function checkRequestContentType(contentType: string | undefined, allowForm: boolean): void {
  if (isJsonContentType(contentType)) return;
  const t = (contentType ?? '').split(';')[0].trim().toLowerCase();
  if (allowForm && t === 'application/x-www-form-urlencoded') return;
  throw fhirError(415, 'not-supported', `Content-Type ${contentType} is not supported; send application/fhir+json`);
}
