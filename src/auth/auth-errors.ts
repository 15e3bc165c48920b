/**
 * Errors of the access layer and the bodies they answer with: OAuth 2.0 errors (RFC 6749 5.2)
 * for /oauth2, OperationOutcome for /fhir, a DICOM JSON ErrorComment for /dicomweb.
 */

/** An OAuth 2.0 error response (RFC 6749 5.2, RFC 7662 2.3). */
export class OAuthError extends Error {
  constructor(
    readonly status: 400 | 401 | 403 | 500 | 503,
    readonly error: 'invalid_request' | 'invalid_client' | 'invalid_grant' | 'invalid_scope' | 'unauthorized_client' | 'unsupported_grant_type' | 'server_error' | 'temporarily_unavailable',
    readonly description: string,
  ) {
    super(description);
    this.name = 'OAuthError';
  }
}

/** A bearer token that cannot be accepted (RFC 6750 3.1 invalid_token). */
export class TokenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenError';
  }
}

/** Which protocol shapes an error answer, chosen by the request path. */
export type ErrorFlavour = 'fhir' | 'dicomweb' | 'oauth';

/** The protocol of a request path: /fhir..., /dicomweb..., anything else. */
export function errorFlavour(path: string): ErrorFlavour {
  // The privacy and governance routes answer in OperationOutcomes too (src/privacy, src/admin).
  if (path === '/fhir' || path.startsWith('/fhir/') || path.startsWith('/privacy/') || path.startsWith('/admin/')) return 'fhir';
  if (path === '/dicomweb' || path.startsWith('/dicomweb/')) return 'dicomweb';
  return 'oauth';
}

/** FHIR R4 IssueType for an HTTP status (OperationOutcome.issue.code). */
function issueCode(status: number): string {
  if (status === 401) return 'login';
  if (status === 403) return 'forbidden';
  if (status === 404) return 'not-found';
  if (status === 503) return 'transient';
  if (status >= 500) return 'exception';
  return 'processing';
}

/**
 * The body and media type of an access error for the request's protocol: an OperationOutcome
 * (FHIR R4 3.1.0.4) for /fhir, a DICOM JSON data set with ErrorComment (0000,0902) for
 * /dicomweb, an RFC 6749 style `{ error, error_description }` elsewhere. Never echoes a token.
 */
export function authErrorBody(path: string, status: number, message: string): { contentType: string; body: string } {
  const flavour = errorFlavour(path);
  const text = message.replace(/[\r\n]+/g, ' ').slice(0, 1024);
  if (flavour === 'fhir') {
    return {
      contentType: 'application/fhir+json',
      body: JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: issueCode(status), diagnostics: text }] }),
    };
  }
  if (flavour === 'dicomweb') {
    return { contentType: 'application/dicom+json', body: JSON.stringify({ '00000902': { vr: 'LO', Value: [text.slice(0, 64)] } }) };
  }
  const error = status === 401 ? 'invalid_token' : status === 403 ? 'insufficient_scope' : status >= 500 ? 'server_error' : 'invalid_request';
  return { contentType: 'application/json', body: JSON.stringify({ error, error_description: text }) };
}

/** `WWW-Authenticate` for a 401/403 (RFC 6750 3): realm, and the error when a token was presented. */
export function wwwAuthenticate(error?: 'invalid_token' | 'insufficient_scope' | 'invalid_request', description?: string): string {
  let value = 'Bearer realm="imaging-lake"';
  if (error) value += `, error="${error}"`;
  if (error && description) value += `, error_description="${description.replace(/["\\\r\n]/g, ' ').slice(0, 200)}"`;
  return value;
}
