import { fhirError } from '../fhir/outcome';

/**
 * Checks of the JSON bodies the non-FHIR APIs take (/privacy, /admin): each failure is a 400
 * OperationOutcome naming what was expected.
 */

/** The body as a JSON object; 400 naming `shape` (e.g. `{id, name}`) otherwise. */
export function objectBody(body: unknown, shape: string): Record<string, unknown> {
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw fhirError(400, 'invalid', `body: a JSON object ${shape} is required`);
  return body as Record<string, unknown>;
}

/** A non-empty text of at most `max` characters, trimmed; 400 naming the field otherwise. */
export function requiredText(value: unknown, name: string, max: number): string {
  if (typeof value !== 'string' || value.trim() === '' || value.length > max) throw fhirError(400, 'invalid', `${name}: non-empty text of at most ${max} characters is required`);
  return value.trim();
}
