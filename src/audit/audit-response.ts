/**
 * Audit before answer: an express middleware that holds back the first byte of every response
 * (status line, headers, body) until the AuditEvent describing it is durably written (queued
 * on the group-commit writer of audit-writer.ts: concurrent requests share one INSERT). If the
 * write fails, the prepared answer is discarded and the client gets 503 instead: no access is
 * ever served unaudited. Routes only describe what they touched in `res.locals.audit`; writes
 * that run in a transaction record the event in that transaction (`auditInTransaction`) and the
 * gate then lets the response through untouched.
 *
 * Reads start early: once the guard has authorized a GET or HEAD it calls beginReadAudit, and
 * the event (success, as described then) is queued at once, so its commit overlaps the work of
 * the handler instead of following it. When the answer is ready the gate waits for that commit;
 * if the answer's outcome or description differs (404, 400, 5xx, a route that named what it
 * touched, a client that went away), it corrects that same event (correctAuditEvent) before the
 * first byte leaves. The trail thus never keeps a success for a request that was answered with
 * a failure.
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { authErrorBody } from '../auth/auth-errors';
import { buildAuditEvent, outcomeForStatus, type AuditEvent, type AuditInput, type AuditSource } from './audit-event';
import { auditInsertFor, isAuditWriteFailure, writeAuditEvent, type AuditInsert } from './audit-store';
import { auditWriterFor, type AuditWriter } from './audit-writer';
import { loggableUrl } from '../logger';

/** What a route (or the access guard) records about the current request in `res.locals.audit`. */
export interface AuditLocals extends Partial<Omit<AuditInput, 'agent' | 'status'>> {
  /** Set once the event has been written and committed: the gate writes nothing more. */
  written?: boolean;
  /**
   * Set by auditInTransaction: resolves true when the transaction holding the event committed,
   * false when it rolled back (then the gate records the failed request itself).
   */
  committed?: Promise<boolean>;
}

/** Where audit events go and who records them. */
export interface AuditRecorder {
  knex: Knex;
  source: AuditSource;
  logger: Logger;
  /** The group-commit writer the gate queues events on (default: the shared writer of `knex`). */
  writer?: AuditWriter;
}

/** Builds the full audit input of a request from its principal, address, id and locals. */
export function auditInputFromRequest(req: Request, res: Response, extra: Partial<AuditInput> = {}): AuditInput {
  const locals = (res.locals.audit ?? {}) as AuditLocals;
  const p = req.principal;
  const requestId = (req as Request & { id?: unknown }).id ?? res.getHeader('X-Request-Id');
  const { written: _written, committed: _committed, ...described } = locals;
  return {
    protocol: 'fhir',
    action: 'read',
    ...described,
    ...extra,
    status: extra.status ?? res.statusCode,
    agent: {
      subject: p?.subject,
      issuer: p?.issuer,
      clientId: p?.clientId,
      role: p?.role,
      displayName: p?.displayName,
      tokenId: p?.tokenId,
      address: req.ip ?? req.socket?.remoteAddress,
      ...extra.agent,
    },
    requestId: requestId === undefined ? undefined : String(requestId),
  };
}

/**
 * Writes the request's AuditEvent in `trx` (the transaction of the change it records), so the
 * change and its audit commit together. The gate then lets the answer through without a second
 * event if the transaction committed, and records the failure itself if it rolled back.
 */
export async function auditInTransaction(trx: Knex.Transaction | Knex, recorder: Pick<AuditRecorder, 'source'>, req: Request, res: Response, extra: Partial<AuditInput> = {}): Promise<void> {
  const input = auditInputFromRequest(req, res, { status: 200, ...extra });
  await writeAuditEvent(trx, buildAuditEvent(input, recorder.source));
  res.locals.audit = { ...(res.locals.audit ?? {}), committed: transactionCommitted(trx) };
}

/** Resolves true once `trx` committed, false if it rolled back; a bare Knex (no transaction) counts as committed. */
export function transactionCommitted(trx: Knex.Transaction | Knex): Promise<boolean> {
  const execution = (trx as Knex.Transaction).executionPromise as Promise<unknown> | undefined;
  return execution ? execution.then(() => true, () => false) : Promise.resolve(true);
}

/**
 * `event` as an INSERT a write runs within its own first statement in its transaction;
 * `onWritten` gets whether that transaction committed, once the statement has succeeded.
 */
export function auditStatementOf(event: AuditEvent, onWritten: (committed: Promise<boolean>) => void): TransactionAuditStatement {
  return {
    ...auditInsertFor(event),
    written: (trx) => onWritten(transactionCommitted(trx)),
    isFailure: isAuditWriteFailure,
  };
}

/**
 * The request's AuditEvent as an INSERT the write runs within its own first statement in its
 * transaction (one round trip less than auditInTransaction); `written(trx)` must be called once
 * that statement succeeded, with the same effect on the gate as auditInTransaction.
 */
export function auditStatementInTransaction(
  recorder: Pick<AuditRecorder, 'source'>,
  req: Request,
  res: Response,
  extra: Partial<AuditInput> = {},
): TransactionAuditStatement {
  const input = auditInputFromRequest(req, res, { status: 200, ...extra });
  return auditStatementOf(buildAuditEvent(input, recorder.source), (committed) => {
    res.locals.audit = { ...(res.locals.audit ?? {}), committed };
  });
}

/** An AuditEvent INSERT to run in a write's own statement (auditStatementInTransaction). */
export interface TransactionAuditStatement extends AuditInsert {
  /** Call once the statement carrying the INSERT succeeded in `trx`. */
  written(trx: Knex.Transaction): void;
  /** Whether an error of that statement came from the audit table (answered like AuditWriteError). */
  isFailure(err: unknown): boolean;
}

/**
 * auditInTransaction bound to a recorder, as the protocol routers receive it: writes run it in
 * their transaction so that a change and its AuditEvent commit together or not at all.
 * `statement` gives the same event as an INSERT for the write's own statement.
 */
export type TransactionAuditor = ((trx: Knex.Transaction, req: Request, res: Response, extra?: Partial<AuditInput>) => Promise<void>) & {
  statement: (req: Request, res: Response, extra?: Partial<AuditInput>) => TransactionAuditStatement;
};

/** Binds auditInTransaction (and auditStatementInTransaction) to `recorder`. */
export function createTransactionAuditor(recorder: Pick<AuditRecorder, 'source'>): TransactionAuditor {
  return Object.assign((trx: Knex.Transaction, req: Request, res: Response, extra?: Partial<AuditInput>) => auditInTransaction(trx, recorder, req, res, extra), {
    statement: (req: Request, res: Response, extra?: Partial<AuditInput>) => auditStatementInTransaction(recorder, req, res, extra),
  });
}

type AnyFn = (...args: unknown[]) => unknown;

/**
 * Where the gate leaves the early starter of a response it holds (called by the guard). A
 * property of the response rather than a WeakMap entry: every request has one, and a WeakMap
 * keyed by short-lived objects makes each garbage collection work through its entries.
 */
const READ_STARTER = Symbol('imaging-lake.audit.readStarter');
type StartableResponse = Response & { [READ_STARTER]?: () => void };

/**
 * Starts writing the AuditEvent of an authorized read now, in parallel with its handler (the
 * gate waits for it, and corrects it if the answer differs). Call only for requests that write
 * nothing themselves (GET/HEAD); a no-op without a gate or without `res.locals.audit`.
 */
export function beginReadAudit(res: Response): void {
  (res as StartableResponse)[READ_STARTER]?.();
}

/**
 * How each field of an AuditInput is compared when deciding whether two inputs describe the same
 * event. Every field but status and outcome (compared through the outcome they give) must be
 * listed: a field added to AuditInput and not here fails to compile, rather than being ignored.
 */
const DESCRIPTION_FIELDS: { [K in Exclude<keyof AuditInput, 'status' | 'outcome'>]-?: (a: AuditInput[K], b: AuditInput[K]) => boolean } = {
  protocol: Object.is,
  action: Object.is,
  resourceType: Object.is,
  resourceId: Object.is,
  query: Object.is,
  patient: Object.is,
  outcomeDescription: Object.is,
  requestId: Object.is,
  studyUids: sameList,
  projects: sameList,
  agent: sameRecord,
  details: sameRecord,
};
const DESCRIPTION_KEYS = Object.keys(DESCRIPTION_FIELDS) as Array<keyof typeof DESCRIPTION_FIELDS>;

/** True when `a` and `b` describe the same event (everything but the id and time; the status only through its outcome). */
export function sameAuditDescription(a: AuditInput, b: AuditInput): boolean {
  if ((a.outcome ?? outcomeForStatus(a.status ?? 200)) !== (b.outcome ?? outcomeForStatus(b.status ?? 200))) return false;
  for (const key of DESCRIPTION_KEYS) {
    const same = DESCRIPTION_FIELDS[key] as (x: unknown, y: unknown) => boolean;
    if (!same(a[key], b[key])) return false;
  }
  return true;
}

function sameList(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  if (a === b) return true;
  if (!a || !b || a.length !== b.length) return false;
  return a.every((v, i) => v === b[i]);
}

/** Shallow equality of two records of strings, a key whose value is undefined counting as absent. */
function sameRecord(a: object | undefined, b: object | undefined): boolean {
  if (a === b) return true;
  const x = (a ?? {}) as Record<string, unknown>;
  const y = (b ?? {}) as Record<string, unknown>;
  for (const k in x) if (x[k] !== y[k]) return false;
  for (const k in y) if (x[k] !== y[k]) return false;
  return true;
}

/** An event written ahead of the answer. */
interface EarlyEvent {
  event: AuditEvent;
  input: AuditInput;
  committed: Promise<void>;
}

/**
 * The gate. Mount it before the access guard on /fhir and /dicomweb. For a request whose
 * `res.locals.audit` is set (the guard sets it), the first `writeHead`/`write`/`end`/
 * `flushHeaders` starts the audit write and every call is queued until it commits; writes return
 * false meanwhile so streams pause (backpressure) and get 'drain' once the answer flows.
 */
export function createAuditGate(recorder: AuditRecorder): RequestHandler {
  let writer = recorder.writer;
  return (req: Request, res: Response, next: NextFunction) => {
    const raw = res as unknown as Record<'writeHead' | 'write' | 'end' | 'flushHeaders', AnyFn>;
    const original = { writeHead: raw.writeHead, write: raw.write, end: raw.end, flushHeaders: raw.flushHeaders };
    let state: 'open' | 'pending' | 'done' = 'open';
    let needDrain = false;
    let early: EarlyEvent | undefined;
    const queue: Array<() => void> = [];

    const restore = () => {
      raw.writeHead = original.writeHead;
      raw.write = original.write;
      raw.end = original.end;
      raw.flushHeaders = original.flushHeaders;
    };
    const release = () => {
      state = 'done';
      restore();
      for (const call of queue.splice(0)) call();
      if (needDrain && !res.writableEnded) res.emit('drain');
    };
    const refuse = (err: unknown) => {
      state = 'done';
      restore();
      queue.length = 0;
      recorder.logger.error({ err, url: loggableUrl(req.originalUrl) }, 'audit write failed: answer withheld');
      // Whatever the route still writes goes nowhere: the prepared answer is never sent.
      raw.write = () => true;
      raw.end = () => res;
      raw.writeHead = () => res;
      raw.flushHeaders = () => undefined;
      if (res.headersSent) {
        res.destroy();
        return;
      }
      for (const h of res.getHeaderNames()) if (h !== 'x-request-id') res.removeHeader(h);
      const { contentType, body } = authErrorBody(req.originalUrl.split('?')[0], 503, 'audit trail unavailable: access refused');
      res.statusCode = 503;
      const closing = !req.complete;
      original.writeHead.call(res, 503, {
        'Content-Type': contentType,
        'Content-Length': Buffer.byteLength(body),
        'Retry-After': '5',
        ...(closing ? { Connection: 'close' } : {}),
      });
      original.end.call(res, body);
      if (closing) res.on('finish', () => req.socket?.destroySoon?.());
    };
    const record = (status: number) => {
      let event;
      try {
        event = buildAuditEvent(auditInputFromRequest(req, res, { status }), recorder.source);
      } catch (err) {
        refuse(err);
        return;
      }
      // Group commit: concurrent requests share one INSERT; this answer waits for its commit.
      writer ??= auditWriterFor(recorder.knex);
      writer.write(event).then(release, refuse);
    };
    /** The answer of a read whose event was written early: keep that event, or correct it first. */
    const settleEarly = (written: EarlyEvent, status: number) => {
      let corrected: AuditEvent | undefined;
      try {
        const input = auditInputFromRequest(req, res, { status });
        if (!sameAuditDescription(input, written.input)) corrected = { ...buildAuditEvent(input, recorder.source, new Date(written.event.recorded)), id: written.event.id };
      } catch (err) {
        written.committed.then(() => refuse(err), refuse);
        return;
      }
      written.committed.then(() => (corrected ? writer!.correct(corrected).then(release, refuse) : release()), refuse);
    };
    const begin = () => {
      const locals = res.locals.audit as AuditLocals | undefined;
      if (state !== 'open' || early || !locals || locals.written || locals.committed) return;
      let input: AuditInput;
      let event: AuditEvent;
      try {
        input = auditInputFromRequest(req, res, { status: 200 });
        event = buildAuditEvent(input, recorder.source);
      } catch {
        return; // the gate writes the event with the answer instead
      }
      writer ??= auditWriterFor(recorder.knex);
      // Sent now when the writer is idle: the handler's own query goes after it, and its commit
      // (the longer of the two at one client) starts before the handler's synchronous work.
      const committed = writer.write(event, { now: true });
      // Settled by the gate (settleEarly); no rejection is left unhandled meanwhile.
      committed.catch(() => undefined);
      early = { event, input, committed };
      // A client that leaves before the answer: the event must not stand as a success.
      res.once('close', () => {
        if (state !== 'open' || !early) return;
        state = 'pending';
        res.locals.audit = { ...(res.locals.audit ?? {}), outcomeDescription: 'the client closed the connection before the answer' };
        settleEarly(early, 499);
      });
    };
    (res as StartableResponse)[READ_STARTER] = begin;
    const start = (statusFromArgs?: unknown) => {
      state = 'pending';
      const locals = res.locals.audit as AuditLocals | undefined;
      const status = typeof statusFromArgs === 'number' ? statusFromArgs : res.statusCode;
      if (early) {
        settleEarly(early, status);
        return;
      }
      if (!locals || locals.written) {
        queueMicrotask(release);
        return;
      }
      if (locals.committed) {
        // Written in the route's transaction: nothing to add if it committed.
        locals.committed.then((ok) => (ok ? release() : record(status)));
        return;
      }
      record(status);
    };
    const hold = (name: keyof typeof original, result: (args: unknown[]) => unknown) =>
      function held(this: unknown, ...args: unknown[]) {
        if (state === 'done') return original[name].apply(res, args);
        if (state === 'open') start(name === 'writeHead' ? args[0] : undefined);
        queue.push(() => {
          original[name].apply(res, args);
        });
        return result(args);
      };
    raw.writeHead = hold('writeHead', () => res);
    raw.flushHeaders = hold('flushHeaders', () => undefined);
    raw.end = hold('end', () => res);
    raw.write = hold('write', () => {
      needDrain = true;
      return false;
    });
    next();
  };
}
