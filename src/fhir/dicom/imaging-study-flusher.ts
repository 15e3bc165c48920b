import type { Knex } from 'knex';
import { withTransaction } from '../../db/database';
import type { Logger } from '../../logger';
import { materializeImagingStudies } from './imaging-study-sync';

/**
 * Writes the ImagingStudy of studies the DICOM index marked pending (imaging_study_pending,
 * see markImagingStudiesPending):
 *
 * - in the background, `delayMs` after an index change committed (throttled, not debounced,
 *   so a steady stream of STOWs into one study still gets rewritten every `delayMs` or so),
 *   every `pollMs` (marks left by another server process or by a crash), and on start;
 * - before a FHIR request that could read an ImagingStudy (`refreshFor`), waiting for a
 *   rewrite in progress: a request that starts after a STOW-RS response sees its instances;
 * - on shutdown (`stop`).
 *
 * Each study is rewritten in a transaction of its own holding the study's rewrite lock (a
 * transaction-level advisory lock: rewrites of one study, from any process, take turns; the
 * background skips a study another rewrite holds). It reads the mark's generation, rewrites
 * the study from the index, and deletes the mark only if its generation is unchanged: a change
 * that committed after the rewrite read the index has bumped it, so the study stays pending.
 * An index change waits for a rewrite only between that delete and its commit (the mark's row
 * lock), never for the rewrite itself.
 *
 * The ImagingStudy history therefore holds one version per rewrite, not one per STOW.
 */
export interface ImagingStudyFlusher {
  /** Schedules a background rewrite once `trx` (the index change that marked studies) commits. */
  noteChange(trx?: Knex.Transaction): void;
  /** Rewrites, before it runs, the pending studies a FHIR request could read (none for most requests). */
  refreshFor(req: FhirRequestShape): Promise<void>;
  /**
   * For a search that may read any pending study: the check its page statement can make itself
   * (true when studies are pending) and the rewrite to run then; undefined for other scopes.
   */
  deferredRefreshFor(req: FhirRequestShape): { sql: string; refresh(): Promise<void> } | undefined;
  /** Rewrites every study pending now, waiting for marks held by others; resolves with how many it wrote. */
  flushAll(): Promise<number>;
  /** Stops the background (timers; a running pass finishes), then rewrites what is still pending; `refreshFor` and `flushAll` keep working. */
  stop(): Promise<void>;
}

/** What `refreshFor` looks at in a FHIR request (src/fhir/http/fhir-request.ts FhirRequest). */
export interface FhirRequestShape {
  method: string;
  path: string;
  query: Record<string, string[]>;
  headers?: Record<string, string | undefined>;
  body?: unknown;
}

export interface ImagingStudyFlusherOptions {
  knex: Knex;
  logger: Logger;
  /** Least wait after an index change before the background rewrite (coalesces a burst of STOWs). */
  delayMs?: number;
  /** Most wait: the wait grows with the time the last pass took (large studies), up to this. */
  maxDelayMs?: number;
  /** How often to look for marks nobody announced (other processes, a crash before the rewrite). */
  pollMs?: number;
  /** Wait before retrying after a failed background pass. */
  retryMs?: number;
  /**
   * How long stop() may spend rewriting pending studies (default 5 s): what is left stays marked
   * for the next start, so that a stop after a large load ends within an orchestrator's grace
   * period (Kubernetes: 30 s) instead of being killed mid-rewrite.
   */
  shutdownBudgetMs?: number;
}

/** Starts the background flusher; it looks for marks left over at once. */
export function startImagingStudyFlusher(options: ImagingStudyFlusherOptions): ImagingStudyFlusher {
  const { knex, logger } = options;
  const delayMs = options.delayMs ?? 1_000;
  const pollMs = options.pollMs ?? 5_000;
  const retryMs = options.retryMs ?? 1_000;
  const shutdownBudgetMs = options.shutdownBudgetMs ?? 5_000;
  const maxDelayMs = Math.max(delayMs, options.maxDelayMs ?? 10_000);
  // Rewriting a study costs in proportion to its instances: waiting ten times as long as the
  // last pass took keeps the background's share of the time bounded (about a tenth) however
  // large the study, instead of rewriting a 2,000-instance study after nearly every STOW.
  // Readers never wait for the background (refreshFor rewrites what they could see), so a long
  // wait costs no freshness; a 200 ms / 4x schedule measured 17 ms of server CPU per
  // single-instance STOW into a growing 1,000-instance study.
  let nextDelayMs = delayMs;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;

  const schedule = (ms: number) => {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    if (timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      running = runPass().finally(() => {
        running = undefined;
        if (again) {
          again = false;
          schedule(nextDelayMs);
        }
      });
    }, ms);
    timer.unref();
  };

  const runPass = async () => {
    const started = Date.now();
    try {
      // One look at the oldest marks per pass: a study changed again meanwhile waits for the next pass.
      const candidates = await pendingStudies(knex, PASS_SIZE);
      let written = 0;
      for (const pk of candidates) {
        if (stopped) break;
        if (await materializeStudy(knex, pk, { wait: false })) written++;
      }
      if (written > 0) {
        nextDelayMs = Math.min(maxDelayMs, Math.max(delayMs, 10 * (Date.now() - started)));
        logger.debug({ studies: written, nextDelayMs }, 'ImagingStudy rewritten from the index');
      }
      if (candidates.length === PASS_SIZE) again = true;
    } catch (err) {
      // The marks stay; the next pass retries them.
      logger.error({ err }, 'ImagingStudy rewrite failed; will retry');
      again = false;
      const t = setTimeout(() => schedule(0), retryMs);
      t.unref();
    }
  };

  const poll = setInterval(() => schedule(0), pollMs);
  poll.unref();
  schedule(0);

  return {
    noteChange(trx) {
      const committed = (trx as (Knex.Transaction & { executionPromise?: Promise<unknown> }) | undefined)?.executionPromise;
      if (committed) committed.then(() => schedule(nextDelayMs), () => undefined);
      else schedule(nextDelayMs);
    },
    async refreshFor(req) {
      const scope = observableScope(req);
      if (scope === 'none') return;
      await materializePending(knex, scope === 'all' ? undefined : scope.imagingStudyId);
    },
    deferredRefreshFor(req) {
      if (observableScope(req) !== 'all') return undefined;
      return {
        sql: 'EXISTS (SELECT 1 FROM imaging_study_pending)',
        refresh: async () => {
          await materializePending(knex);
        },
      };
    },
    flushAll: () => materializePending(knex),
    async stop() {
      stopped = true;
      clearInterval(poll);
      if (timer) clearTimeout(timer);
      timer = undefined;
      await running;
      try {
        const deadline = Date.now() + shutdownBudgetMs;
        const pks = await pendingStudies(knex);
        let done = 0;
        for (const pk of pks) {
          if (Date.now() >= deadline) {
            logger.warn({ left: pks.length - done }, 'ImagingStudy rewrites left for the next start (shutdown budget spent)');
            break;
          }
          await materializeStudy(knex, pk, { wait: true });
          done++;
        }
      } catch (err) {
        // Whatever is left stays marked; the next start picks it up.
        logger.error({ err }, 'ImagingStudy rewrite at shutdown failed; left for the next start');
      }
    },
  };
}

/** Studies looked at per background pass. */
const PASS_SIZE = 100;

/** First key of the studies' rewrite locks (pg_advisory_xact_lock(int, int)); the second is the study's key. */
const REWRITE_LOCK_CLASS = 0x15d1c0;

/** The oldest marked studies (all, without a limit). */
async function pendingStudies(knex: Knex, limit?: number): Promise<number[]> {
  const result = await knex.raw(`SELECT study_pk FROM imaging_study_pending ORDER BY since, study_pk${limit ? ' LIMIT ?' : ''}`, limit ? [limit] : []);
  return (result.rows as Array<{ study_pk: string | number }>).map((r) => Number(r.study_pk));
}

/**
 * Rewrites one study's ImagingStudy if it is still marked, under the study's rewrite lock
 * (waiting for it, or giving up when `wait` is false and another rewrite holds it). Deletes the
 * mark only if no change bumped it since it was read. True when it wrote the study.
 */
async function materializeStudy(knex: Knex, studyPk: number, options: { wait: boolean }): Promise<boolean> {
  return withTransaction(knex, async (trx) => {
    const key = [REWRITE_LOCK_CLASS, studyPk % 2147483647];
    if (options.wait) await trx.raw(`SELECT pg_advisory_xact_lock(?::int, ?::int)`, key);
    else if (!(await trx.raw(`SELECT pg_try_advisory_xact_lock(?::int, ?::int) AS locked`, key)).rows[0].locked) return false;
    // Read after the lock: a rewrite that held it has committed, and its delete is visible.
    const mark = (await trx.raw(`SELECT gen FROM imaging_study_pending WHERE study_pk = ?`, [studyPk])).rows[0] as { gen: string | number } | undefined;
    if (!mark) return false;
    await materializeImagingStudies(trx, [studyPk]);
    await trx.raw(`DELETE FROM imaging_study_pending WHERE study_pk = ? AND gen = ?`, [studyPk, mark.gen]);
    return true;
  });
}

/**
 * Rewrites the studies marked now (only the one whose ImagingStudy has `imagingStudyId`, when
 * given), each in its own transaction, waiting for rewrites in progress. Resolves with how many it wrote.
 */
async function materializePending(knex: Knex, imagingStudyId?: string): Promise<number> {
  const pks =
    imagingStudyId === undefined
      ? await pendingStudies(knex)
      : ((await knex.raw(`SELECT m.study_pk FROM imaging_study_pending m JOIN studies st ON st.id = m.study_pk WHERE st.fhir_id = ?`, [imagingStudyId])).rows as Array<{ study_pk: string | number }>).map((r) => Number(r.study_pk));
  let written = 0;
  for (const pk of pks) if (await materializeStudy(knex, pk, { wait: true })) written++;
  return written;
}

/** A `_revinclude` value `Type:param[:Target]` that brings resources of a type other than ImagingStudy. */
function revincludesOtherType(value: string): boolean {
  const m = /^([A-Z][A-Za-z]+):[A-Za-z0-9*-]+(?::[A-Z][A-Za-z]+)?$/.exec(value);
  return m !== null && m[1] !== 'ImagingStudy';
}

/** Parameters that change how an answer is written, not what it holds. */
const FORMAT_PARAMS = new Set(['_format', '_pretty', '_summary', '_elements']);

/**
 * Which pending ImagingStudy resources a FHIR request could read: none (a read or search of
 * another type that names no ImagingStudy and follows no reference: Patient/{id}, Condition?code=...),
 * one (a read, vread or history of ImagingStudy/{id}), or all (ImagingStudy searches, system
 * history, Bundles, includes, chains, _has, ...). Errs towards 'all'.
 */
export function observableScope(req: FhirRequestShape): 'none' | 'all' | { imagingStudyId: string } {
  const segments = req.path.split('/').filter(Boolean);
  const [first, second, third] = segments;
  if (segments.length === 0) return 'all'; // batch or transaction Bundle: any entry may
  if (first === 'metadata') return 'none';
  if (first === 'ImagingStudy') {
    // Only an interaction on one id (read, vread, its history, update, delete) is narrowed to that study.
    const onId = second !== undefined && /^[A-Za-z0-9\-.]{1,64}$/.test(second) && (third === undefined || third === '_history');
    const plainQuery = Object.keys(req.query).every((k) => FORMAT_PARAMS.has(k));
    return onId && plainQuery ? { imagingStudyId: second } : 'all';
  }
  if (first.startsWith('_') || first.startsWith('$')) return 'all';
  const params: Array<[string, string[]]> = Object.entries(req.query);
  // POST Type/_search carries its parameters as a form body.
  if (second === '_search' && req.body && typeof req.body === 'object') {
    for (const [k, v] of Object.entries(req.body as Record<string, unknown>)) params.push([k, (Array.isArray(v) ? v : [v]).map(String)]);
  }
  for (const [key, values] of params) {
    // `_revinclude=Condition:patient` adds only Conditions (no :iterate round follows it).
    if (key === '_revinclude' && values.every(revincludesOtherType)) continue;
    if (key.startsWith('_include') || key.startsWith('_revinclude') || key.startsWith('_has') || key.includes('.') || key.includes('ImagingStudy')) return 'all';
    if (values.some((v) => v.includes('ImagingStudy'))) return 'all';
  }
  if (req.headers?.['if-none-exist']?.includes('ImagingStudy')) return 'all';
  return 'none';
}
