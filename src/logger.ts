import pino, { type Logger } from 'pino';

/** Creates the structured JSON logger (one JSON object per line; request id bound per request). */
export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'imaging-lake' }, timestamp: pino.stdTimeFunctions.isoTime });
}

export type { Logger };
