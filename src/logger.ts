import pino, { type Logger } from 'pino';

/** Creates the structured JSON logger (one JSON object per line; request id bound per request). */
export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'imaging-lake' }, timestamp: pino.stdTimeFunctions.isoTime });
}

export type { Logger };

/**
 * A request's URL as the log keeps it: the path, and of the query only the parameter names. The
 * values of a search (PatientName, PatientID, birthdate, FHIR identifier=...) are PHI, and the
 * log is read by people and systems the AuditEvents' access rules do not cover.
 */
export function loggableUrl(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const names = url
    .slice(q + 1)
    .split('&')
    .filter((pair) => pair !== '')
    .map((pair) => {
      const eq = pair.indexOf('=');
      return eq < 0 ? pair : `${pair.slice(0, eq)}=*`;
    });
  return `${url.slice(0, q)}?${names.join('&')}`;
}
