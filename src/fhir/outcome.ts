import type { OperationOutcome, OperationOutcomeIssue } from '@medplum/fhirtypes';

/**
 * The one error type of the FHIR core (STYLE 3 and 6): an HTTP status and the
 * OperationOutcome that is the response body (FHIR R4 http 3.1.0.4.1).
 */
export class OperationOutcomeError extends Error {
  constructor(
    readonly status: number,
    readonly outcome: OperationOutcome,
    readonly headers: Record<string, string> = {},
  ) {
    super(outcome.issue?.map((i) => i.diagnostics ?? i.details?.text).join('; ') || `HTTP ${status}`);
    this.name = 'OperationOutcomeError';
  }
}

/** Builds an OperationOutcome with one issue. */
export function outcome(severity: OperationOutcomeIssue['severity'], code: OperationOutcomeIssue['code'], text: string, expression?: string[]): OperationOutcome {
  const issue: OperationOutcomeIssue = { severity, code, diagnostics: text, details: { text } };
  if (expression?.length) issue.expression = expression;
  return { resourceType: 'OperationOutcome', issue: [issue] };
}

/** Shorthand for an error answer with a single issue. */
export function fhirError(status: number, code: OperationOutcomeIssue['code'], text: string, expression?: string[]): OperationOutcomeError {
  return new OperationOutcomeError(status, outcome(status >= 500 ? 'fatal' : 'error', code, text, expression));
}

/** 400: the request or a parameter is malformed. */
export const badRequest = (text: string, expression?: string[]) => fhirError(400, 'invalid', text, expression);
/** 404: no such resource or endpoint. */
export const notFound = (text: string) => fhirError(404, 'not-found', text);
/** 405: the interaction is not allowed on this type. */
export const notAllowed = (text: string) => fhirError(405, 'not-supported', text);
/** 409: a version conflict not covered by If-Match. */
export const conflict = (text: string) => fhirError(409, 'conflict', text);
/** 410: the resource was deleted. */
export const gone = (text: string) => fhirError(410, 'deleted', text);
/** 412: a precondition (If-Match, conditional match count) failed. */
export const preconditionFailed = (text: string) => fhirError(412, 'conflict', text);

/** An informational OperationOutcome (delete answers, Prefer: return=OperationOutcome). */
export function informational(text: string): OperationOutcome {
  return outcome('information', 'informational', text);
}
