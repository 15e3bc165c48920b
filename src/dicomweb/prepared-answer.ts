/**
 * Sending a prepared DICOMweb answer (WADO-RS, rendered, WADO-URI): status and headers are final
 * before the first byte, `send` streams the body. One sender for every retrieve route.
 */
import type { Request, Response } from 'express';
import type { Writable } from 'node:stream';
import { ClientGoneError } from './multipart-writer';

/** An answer whose status and headers are decided; `send` writes its body. */
export interface PreparedAnswer {
  status: number;
  headers: Record<string, string>;
  send(out: Writable): Promise<void>;
  /** Releases anything opened for the body when it is not sent (HEAD, early close). */
  discard(): void;
}

/** Sends `a`: headers, then the body (nothing for HEAD); a client that leaves ends it quietly. */
export async function sendPrepared(req: Request, res: Response, a: PreparedAnswer): Promise<void> {
  res.status(a.status);
  for (const [k, v] of Object.entries(a.headers)) res.setHeader(k, v);
  if (req.method === 'HEAD') {
    a.discard();
    res.end();
    return;
  }
  try {
    await a.send(res);
  } catch (err) {
    a.discard();
    if (err instanceof ClientGoneError) return;
    // Nothing sent yet: the error answer must not inherit this answer's headers.
    if (!res.headersSent) for (const k of Object.keys(a.headers)) res.removeHeader(k);
    throw err;
  }
}

/** A route handler that prepares an answer and sends it. */
export function answer(prepare: (req: Request, res: Response) => Promise<PreparedAnswer>) {
  return async (req: Request, res: Response): Promise<void> => sendPrepared(req, res, await prepare(req, res));
}
