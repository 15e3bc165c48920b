import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Knex } from 'knex';
import type { Group } from '@medplum/fhirtypes';
import type { Logger } from '../../logger';
import type { BlobStore } from '../../storage/blob-store';
import type { FhirDefinitions } from '../definitions';
import type { DeidView } from '../deid/deid-view';
import { fhirError, notFound, OperationOutcomeError, outcome } from '../outcome';
import type { AccessFilter } from '../store/access';
import { queryRows } from '../store/raw';
import { readCurrent } from '../store/resource-store';
import { createFileWriter, readExportFile, type ExportFile, type FileDeps } from './export-files';
import { ExportCancelled, exportedTypes, groupMembers, readDeletionsInto, readTypeInto, type ExportJob, type ReaderDeps } from './export-reader';
import { loadExportJob, storeExportJob, type ExportRequest, type StoredExportJob } from './export-request';

export type { ExportFile } from './export-files';

/**
 * FHIR Bulk Data export jobs (Bulk Data Access IG 2.0.0): a kick-off is checked and recorded
 * (bulk_exports), then run in this process in the background, one job at a time. Each type is
 * read through the FHIR search engine with the requester's own row filter (projects, granular
 * scopes) and view (de-identified for researchers and PIs), in rid order by keyset (no OFFSET,
 * so the millionth page costs what the first does; export-reader.ts), and written as NDJSON files
 * of at most `resourcesPerFile` resources (export-files.ts). Only resources last changed up to the
 * kick-off's transactionTime are exported. The process holding a job beats its heartbeat; a job
 * whose heartbeat stopped (its process did) is taken over by whichever process sees it first (at
 * its start, or polled for it) and run again from its kept grant and request, up to MAX_ATTEMPTS
 * times; a process that stops cleanly hands its jobs on at once. Replicas share the tables, so any
 * of them answers polls and downloads.
 *
 * A kick-off whose access names projects to approve (a researcher's cohort export) waits as
 * `awaiting-approval` until a PI of each approves it (export-approvals.ts); its authorization and
 * request are kept with the row, so the process that takes the last approval runs it (`resume`).
 */

/** What the kick-off's authorization lets the export read. */
export interface ExportAccess {
  /** Who may poll the job, download its files and cancel it: the kick-off token's issuer and subject. */
  owner: string;
  /** The row filter for reading `type` (undefined: every row), or 'denied' when the token may not read it. */
  filterFor(type: string): AccessFilter | undefined | 'denied';
  /** The de-identified view, for callers who see one (its deidentify and searchView are used). */
  deid?: () => DeidView;
  /** The kick-off's authorization as JSON (BulkExportDeps.accessOf makes this access again from it). */
  grant?: unknown;
  /** Projects whose principal investigator must approve the export before it runs; none: it runs at once. */
  approvalProjects?: readonly string[];
}

export interface BulkExportDeps {
  knex: Knex;
  defs: FhirDefinitions;
  logger: Logger;
  /** Brings derived resources up to date before an export reads them (pending ImagingStudy rewrites). */
  refresh?: () => Promise<unknown>;
  /** Resources read per statement (default 1,000). */
  pageSize?: number;
  /** Resources per output file (default 50,000). */
  resourcesPerFile?: number;
  /** How long a finished export stays (default 24 h). */
  retentionHours?: number;
  /** The access of a stored grant (ExportAccess.grant): how an approved export runs in any process. */
  accessOf?: (grant: unknown) => ExportAccess;
  /** Exports one owner may have waiting, queued or running at once (default 5); more are refused (429). */
  maxActivePerOwner?: number;
  /**
   * Where the output files go: the blob store (content-addressed, claimed in the blob ledger; the
   * orphan sweeper removes them once their export is gone). Without one they are kept in the
   * database (bulk_export_files.body).
   */
  blobs?: BlobStore;
}

/** The state of a job as the status endpoint reports it. */
export type ExportStatus =
  | { state: 'accepted' | 'in-progress' | 'awaiting-approval'; progress: string }
  | { state: 'refused'; message: string }
  | { state: 'completed'; manifest: ExportManifest; expires: Date }
  | { state: 'failed'; message: string };


/** The completion manifest (IG 2.0.0 "Response - Complete Status"), urls relative to the FHIR base. */
export interface ExportManifest {
  transactionTime: string;
  request: string;
  requiresAccessToken: true;
  output: ExportFile[];
  /** With `_since`: files of transaction Bundles, one DELETE entry per resource deleted since. */
  deleted: ExportFile[];
  error: [];
}

export interface BulkExports {
  /** Checks what the kick-off names against the caller's access and records the job; resolves with its id. */
  kickOff(request: ExportRequest, access: ExportAccess, requestUrl: string): Promise<string>;
  /** The job's state, for its owner; undefined when there is no such job of this owner. */
  status(id: string, owner: string): Promise<ExportStatus | undefined>;
  /** One output file, for the job's owner: a stream from the blob store, or the bytes kept in the database. */
  file(id: string, seq: number, owner: string): Promise<Readable | Buffer | undefined>;
  /** Runs an approved job (state `accepted`, approved in export-approvals.ts) in this process. */
  resume(id: string): Promise<void>;
  /** Cancels a running job or deletes a finished one (and its files); false when there is none. */
  remove(id: string, owner: string): Promise<boolean>;
  /** Stops: a running job is abandoned (marked failed) and its work ends. */
  stop(): Promise<void>;
}

/** How long a cohort export waits for its approval before it expires. */
const APPROVAL_WAIT_MS = 7 * 24 * 3600_000;

/** How many times a job is taken over from a stopped process before it is failed. */
const MAX_ATTEMPTS = 3;

/** A job whose heartbeat is older than this lost its process. */
const STALE_SECONDS = 300;
/** How often the holding process beats the heartbeat of its jobs (running and queued). */
const HEARTBEAT_MS = 30_000;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;




export function createBulkExports(deps: BulkExportDeps): BulkExports {
  const { knex, defs, logger } = deps;
  const pageSize = deps.pageSize ?? 1000;
  const perFile = deps.resourcesPerFile ?? 50_000;
  const retentionMs = (deps.retentionHours ?? 24) * 3600_000;
  const maxActive = deps.maxActivePerOwner ?? 5;
  const queue: ExportJob[] = [];
  const live = new Map<string, ExportJob>();
  let running: Promise<void> | undefined;
  let stopped = false;
  const reader: ReaderDeps = { knex, defs, logger, pageSize, isStopped: () => stopped };
  const files: FileDeps = { knex, blobs: deps.blobs, resourcesPerFile: perFile };

  // Jobs whose process stopped are taken over (or failed); expired jobs go.
  const sweep = async () => {
    await takeOverStale();
    await knex('bulk_exports').where('expires_at', '<', knex.fn.now()).delete();
  };
  const ready = sweep().catch((err) => logger.error({ err }, 'bulk export clean-up failed'));
  const heartbeat = setInterval(() => {
    if (live.size === 0) return;
    knex('bulk_exports')
      .whereIn('id', [...live.keys()])
      .update({ heartbeat_at: knex.fn.now() })
      .catch((err: unknown) => logger.warn({ err }, 'bulk export heartbeat failed'));
  }, HEARTBEAT_MS);
  heartbeat.unref();

  const pump = () => {
    if (running || stopped) return;
    const job = queue.shift();
    if (!job) return;
    running = runJob(job)
      .catch((err) => logger.error({ err, exportId: job.id }, 'bulk export failed'))
      .finally(() => {
        live.delete(job.id);
        running = undefined;
        pump();
      });
  };

  async function runJob(job: ExportJob): Promise<void> {
    try {
      await knex('bulk_exports').where({ id: job.id }).update({ state: 'in-progress', progress: 'reading' });
      // A job taken over from a stopped process starts again: the files it had written go.
      await knex('bulk_export_files').where({ export_id: job.id }).delete();
      if (deps.refresh) await deps.refresh();
      const types = await exportedTypes(reader, job);
      const output: ExportManifest['output'] = [];
      const deleted: ExportManifest['output'] = [];
      let seq = 0;
      for (const [i, type] of types.entries()) {
        const writer = createFileWriter(files, job.id, type, () => ++seq, output);
        await readTypeInto(reader, job, type, writer.add);
        await writer.flush();
        if (job.request.since) {
          const deletions = createFileWriter(files, job.id, 'Bundle', () => ++seq, deleted);
          await readDeletionsInto(reader, job, type, deletions.add);
          await deletions.flush();
        }
        await knex('bulk_exports').where({ id: job.id }).update({ progress: `${i + 1} of ${types.length} types exported`, heartbeat_at: knex.fn.now() });
      }
      const done = await knex('bulk_exports')
        .where({ id: job.id, state: 'in-progress' })
        .update({ state: 'completed', output: JSON.stringify({ output, deleted }), progress: null, finished_at: knex.fn.now(), expires_at: new Date(Date.now() + retentionMs) });
      if (done === 0) throw new ExportCancelled();
    } catch (err) {
      if (err instanceof ExportCancelled || job.cancelled) return;
      const message = err instanceof Error && 'outcome' in err ? err.message : 'the export failed on the server; see its log';
      logger.error({ err, exportId: job.id }, 'bulk export failed');
      await knex('bulk_export_files').where({ export_id: job.id }).delete();
      await knex('bulk_exports').where({ id: job.id }).update({ state: 'failed', error: JSON.stringify({ message }), finished_at: knex.fn.now() });
    }
  }






  /**
   * Takes over the running or queued jobs (or the one job `id`) whose process stopped beating their
   * heartbeat. One kept with its grant and request, taken over fewer than MAX_ATTEMPTS times, runs
   * again here from the start: one statement claims it, so of several processes that notice, one
   * runs it. Any other is failed (its client kicks it off again).
   */
  async function takeOverStale(id?: string): Promise<void> {
    if (!stopped && deps.accessOf) {
      const q = knex('bulk_exports')
        .whereIn('state', ['accepted', 'in-progress'])
        .where('heartbeat_at', '<', knex.raw(`now() - interval '${STALE_SECONDS} seconds'`))
        .whereNotNull('grant')
        .whereNotNull('job')
        .where('attempts', '<', MAX_ATTEMPTS);
      if (id) q.where({ id });
      const taken = (await q
        .update({ state: 'accepted', progress: 'queued again: the server process running it stopped', heartbeat_at: knex.fn.now(), attempts: knex.raw('attempts + 1') })
        .returning('id')) as Array<{ id: string }>;
      for (const row of taken) await runLater(row.id);
    }
    await failStale(knex, id);
  }

  /** Queues an `accepted` job kept with its grant and request (approved, or taken over) in this process. */
  async function runLater(id: string): Promise<void> {
    if (stopped || live.has(id) || !deps.accessOf) return;
    const row = await knex('bulk_exports').where({ id, state: 'accepted' }).first('grant', 'job', 'transaction_time');
    if (!row?.grant || !row.job) return;
    const { request, patients } = loadExportJob(jsonOf<StoredExportJob>(row.job) as StoredExportJob);
    const job: ExportJob = { id, request, access: deps.accessOf(jsonOf(row.grant)), transactionTime: new Date(row.transaction_time), patients, cancelled: false };
    live.set(id, job);
    queue.push(job);
    pump();
  }

  /**
   * Refuses a kick-off (429, IG "Bulk Data Kick-off Request": the server may limit requests) when
   * its owner already has `maxActivePerOwner` exports waiting, queued or running: exports run one
   * at a time per process, so one client's burst would hold everyone else's back.
   */
  async function assertRoomFor(owner: string): Promise<void> {
    await takeOverStale();
    const [{ active }] = await queryRows<{ active: string | number }>(
      knex,
      `SELECT count(*) AS active FROM bulk_exports WHERE owner = ? AND state IN ('awaiting-approval', 'accepted', 'in-progress')`,
      [owner],
    );
    if (Number(active) >= maxActive) {
      throw new OperationOutcomeError(
        429,
        outcome('error', 'throttled', `This token has ${Number(active)} exports waiting or running, the most it may have: wait for one to finish, or cancel one (DELETE its status URL)`),
        { 'Retry-After': '60' },
      );
    }
  }



  return {
    async kickOff(request, access, requestUrl) {
      await ready;
      for (const type of request.types ?? []) {
        if (access.filterFor(type) === 'denied') throw fhirError(403, 'forbidden', `This token may not read ${type}: leave it out of _type`);
      }
      let patients = request.patients;
      if (request.level.kind === 'group') {
        const groupAccess = access.filterFor('Group');
        if (groupAccess === 'denied') throw fhirError(403, 'forbidden', 'This token may not read Group');
        const stored = await readCurrent(knex, 'Group', request.level.groupId, { access: groupAccess });
        if (!stored || stored.deleted) throw notFound(`Group/${request.level.groupId} not found`);
        const members = groupMembers(stored.content as Group);
        patients = patients ? patients.filter((p) => members.includes(p)) : members;
      }
      await assertRoomFor(access.owner);
      const [{ now }] = await queryRows<{ now: Date }>(knex, 'SELECT now() AS now', []);
      const id = randomUUID();
      const approval = access.approvalProjects && access.approvalProjects.length > 0 ? [...new Set(access.approvalProjects)].sort() : undefined;
      if (approval && !deps.accessOf) throw new Error('bulk exports: an export to approve needs accessOf to run later');
      await knex('bulk_exports').insert({
        id,
        owner: access.owner,
        state: approval ? 'awaiting-approval' : 'accepted',
        request: requestUrl,
        transaction_time: now,
        progress: approval ? awaitingText(approval) : 'queued',
        expires_at: new Date(Date.now() + (approval ? APPROVAL_WAIT_MS : retentionMs)),
        grant: access.grant === undefined ? null : JSON.stringify(access.grant),
        job: JSON.stringify(storeExportJob(request, patients)),
        projects: approval ?? null,
        approvals: approval ? JSON.stringify([]) : null,
      });
      if (approval) return id;
      const job: ExportJob = { id, request, access, transactionTime: new Date(now), patients, cancelled: false };
      live.set(id, job);
      queue.push(job);
      pump();
      return id;
    },

    async status(id, owner) {
      if (!UUID.test(id)) return undefined;
      await takeOverStale(id);
      const row = await knex('bulk_exports').where({ id, owner }).first();
      if (!row) return undefined;
      if (row.state === 'failed') return { state: 'failed', message: String(jsonOf<{ message?: string }>(row.error)?.message ?? 'the export failed') };
      if (row.state === 'refused') return { state: 'refused', message: refusalText(jsonOf<ExportRefusal>(row.refusal)) };
      if (row.state !== 'completed') return { state: row.state, progress: row.progress ?? row.state };
      const files = jsonOf<Pick<ExportManifest, 'output' | 'deleted'>>(row.output) ?? { output: [], deleted: [] };
      return {
        state: 'completed',
        expires: new Date(row.expires_at),
        manifest: { transactionTime: new Date(row.transaction_time).toISOString(), request: row.request, requiresAccessToken: true, output: files.output, deleted: files.deleted, error: [] },
      };
    },

    async file(id, seq, owner) {
      if (!UUID.test(id) || !Number.isInteger(seq) || seq < 1) return undefined;
      return readExportFile({ knex, blobs: deps.blobs }, id, seq, owner);
    },

    async resume(id) {
      await ready;
      await runLater(id);
    },

    async remove(id, owner) {
      if (!UUID.test(id)) return false;
      const job = live.get(id);
      const removed = await knex('bulk_exports').where({ id, owner }).delete();
      if (removed === 0) return false;
      if (job) {
        job.cancelled = true;
        const i = queue.indexOf(job);
        if (i >= 0) queue.splice(i, 1);
      }
      return true;
    },

    async stop() {
      stopped = true;
      clearInterval(heartbeat);
      for (const job of live.values()) job.cancelled = true;
      // Taken before the running job ends (it then leaves `live`).
      const ids = [...live.keys()];
      await running;
      await ready;
      // Jobs kept with their grant are handed on: stale at once, so the next process that starts or
      // is polled for them takes them over. The others cannot run anywhere else and fail.
      if (ids.length > 0) {
        await knex('bulk_exports')
          .whereIn('id', ids)
          .whereIn('state', ['accepted', 'in-progress'])
          .whereNotNull('grant')
          .whereNotNull('job')
          .update({ state: 'accepted', progress: 'waiting for a server process to take it over', heartbeat_at: new Date(0) })
          .catch(() => undefined);
        await knex('bulk_exports')
          .whereIn('id', ids)
          .whereIn('state', ['accepted', 'in-progress'])
          .where('heartbeat_at', '>', new Date(0))
          .update({ state: 'failed', error: JSON.stringify({ message: 'the server stopped while this export ran; kick it off again' }), finished_at: knex.fn.now() })
          .catch(() => undefined);
      }
    },
  };
}

/** What the status says while an export waits for its approval. */
export function awaitingText(projects: readonly string[]): string {
  return `awaiting approval by a principal investigator of project ${projects.join(', ')}`;
}

/** Who refused an export, and why (bulk_exports.refusal). */
export interface ExportRefusal {
  by: string;
  role: string;
  /** The project the refusing PI spoke for (an admin speaks for all). */
  project?: string;
  reason?: string;
  at: string;
}

function refusalText(refusal: ExportRefusal | undefined): string {
  const who = refusal?.role === 'admin' ? 'an administrator' : `a principal investigator${refusal?.project ? ` of project ${refusal.project}` : ''}`;
  return `The export was refused by ${who}${refusal?.reason ? `: ${refusal.reason}` : ''}`;
}

/** A jsonb column as read by either engine (an object, or its text). */
export function jsonOf<T>(value: unknown): T | undefined {
  if (value === null || value === undefined) return undefined;
  return (typeof value === 'string' ? JSON.parse(value) : value) as T;
}

/** Marks failed the running or queued jobs (or the one job `id`) whose process stopped beating their heartbeat. */
async function failStale(knex: Knex, id?: string): Promise<void> {
  const q = knex('bulk_exports')
    .whereIn('state', ['accepted', 'in-progress'])
    .where('heartbeat_at', '<', knex.raw(`now() - interval '${STALE_SECONDS} seconds'`));
  if (id) q.where({ id });
  await q.update({ state: 'failed', error: JSON.stringify({ message: 'the server process running this export stopped; kick it off again' }), finished_at: knex.fn.now() });
}


