import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Knex } from 'knex';
import type { Group, Resource } from '@medplum/fhirtypes';
import { claimBlob } from '../../db/blob-ledger';
import type { Logger } from '../../logger';
import type { BlobStore } from '../../storage/blob-store';
import type { FhirDefinitions } from '../definitions';
import { compartmentParams } from '../deid/patient-links';
import type { DeidView } from '../deid/deid-view';
import { fhirError, notFound, OperationOutcomeError, outcome } from '../outcome';
import { bothFilters } from '../search/scope-filter';
import { findMatches } from '../search/search-service';
import { parseSearchRequest } from '../search/search-request';
import { applyElements } from '../search/subset';
import type { AccessFilter } from '../store/access';
import { queryRows } from '../store/raw';
import { readCurrent, type StoredResource } from '../store/resource-store';
import { inPatientCompartment, loadExportJob, storeExportJob, type ExportRequest, type StoredExportJob } from './export-request';

/**
 * FHIR Bulk Data export jobs (Bulk Data Access IG 2.0.0): a kick-off is checked and recorded
 * (bulk_exports), then run in this process in the background, one job at a time. Each type is
 * read through the FHIR search engine with the requester's own row filter (projects, granular
 * scopes) and view (de-identified for researchers and PIs), in rid order by keyset (no OFFSET,
 * so the millionth page costs what the first does), and written as NDJSON files of at most
 * `resourcesPerFile` resources into bulk_export_files. Only resources last changed up to the
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

/** One output file of a manifest: its resource type, its url (relative to the FHIR base here) and how many resources it holds. */
export interface ExportFile {
  type: string;
  url: string;
  count: number;
}

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

/** A file is closed at this many characters of NDJSON (large ImagingStudy resources): bounded memory, bounded rows. */
const FILE_BYTES = 32 * 1024 * 1024;

/** Patients per statement of a compartment search. */
const PATIENTS_PER_QUERY = 100;

class Cancelled extends Error {}

interface Job {
  id: string;
  request: ExportRequest;
  access: ExportAccess;
  transactionTime: Date;
  patients?: string[];
  cancelled: boolean;
}

export function createBulkExports(deps: BulkExportDeps): BulkExports {
  const { knex, defs, logger } = deps;
  const pageSize = deps.pageSize ?? 1000;
  const perFile = deps.resourcesPerFile ?? 50_000;
  const retentionMs = (deps.retentionHours ?? 24) * 3600_000;
  const maxActive = deps.maxActivePerOwner ?? 5;
  const queue: Job[] = [];
  const live = new Map<string, Job>();
  let running: Promise<void> | undefined;
  let stopped = false;

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

  async function runJob(job: Job): Promise<void> {
    try {
      await knex('bulk_exports').where({ id: job.id }).update({ state: 'in-progress', progress: 'reading' });
      // A job taken over from a stopped process starts again: the files it had written go.
      await knex('bulk_export_files').where({ export_id: job.id }).delete();
      if (deps.refresh) await deps.refresh();
      const types = await typesOf(job);
      const output: ExportManifest['output'] = [];
      const deleted: ExportManifest['output'] = [];
      let seq = 0;
      for (const [i, type] of types.entries()) {
        const writer = fileWriter(job, type, () => ++seq, output);
        await exportType(job, type, writer.add);
        await writer.flush();
        if (job.request.since) {
          const deletions = fileWriter(job, 'Bundle', () => ++seq, deleted);
          await exportDeletions(job, type, deletions.add);
          await deletions.flush();
        }
        await knex('bulk_exports').where({ id: job.id }).update({ progress: `${i + 1} of ${types.length} types exported`, heartbeat_at: knex.fn.now() });
      }
      const done = await knex('bulk_exports')
        .where({ id: job.id, state: 'in-progress' })
        .update({ state: 'completed', output: JSON.stringify({ output, deleted }), progress: null, finished_at: knex.fn.now(), expires_at: new Date(Date.now() + retentionMs) });
      if (done === 0) throw new Cancelled();
    } catch (err) {
      if (err instanceof Cancelled || job.cancelled) return;
      const message = err instanceof Error && 'outcome' in err ? err.message : 'the export failed on the server; see its log';
      logger.error({ err, exportId: job.id }, 'bulk export failed');
      await knex('bulk_export_files').where({ export_id: job.id }).delete();
      await knex('bulk_exports').where({ id: job.id }).update({ state: 'failed', error: JSON.stringify({ message }), finished_at: knex.fn.now() });
    }
  }

  /** The types a job exports: those named, or every stored type its level covers, that the caller may read. */
  async function typesOf(job: Job): Promise<string[]> {
    if (job.request.types) return job.request.types;
    // Each stored type once, by skip scan over the (resource_type, last_updated) index; types
    // whose resources are all deleted too (with _since, their deletions are reported).
    const rows = await queryRows<{ t: string }>(
      knex,
      `WITH RECURSIVE types AS (
         SELECT min(resource_type) AS t FROM fhir_resource
         UNION ALL
         SELECT (SELECT min(resource_type) FROM fhir_resource WHERE resource_type > types.t) FROM types WHERE types.t IS NOT NULL)
       SELECT t FROM types WHERE t IS NOT NULL`,
      [],
    );
    return rows
      .map((r) => r.t)
      .filter((t) => defs.resourceTypes.has(t) && (job.request.level.kind === 'system' || inPatientCompartment(t)) && job.access.filterFor(t) !== 'denied');
  }

  /** The searches that select a type's resources for a job (their union). */
  function searchesOf(job: Job, type: string): Array<Record<string, string[]>> {
    let base: Array<Record<string, string[]>>;
    const params = type === 'Patient' ? ['_id'] : (compartmentParams(type) ?? []);
    if (job.request.level.kind === 'system') base = [{}];
    else if (!job.patients) base = type === 'Patient' ? [{}] : params.slice(0, 1).map((p) => ({ [`${p}:missing`]: ['false'] }));
    else {
      base = [];
      for (let i = 0; i < job.patients.length; i += PATIENTS_PER_QUERY) {
        const chunk = job.patients.slice(i, i + PATIENTS_PER_QUERY);
        for (const p of params) base.push({ [p]: [chunk.map((id) => (p === '_id' ? id : `Patient/${id}`)).join(',')] });
      }
    }
    const filters = job.request.typeFilters.get(type);
    if (!filters) return base;
    return base.flatMap((b) => filters.map((f) => mergeQueries(b, f)));
  }

  async function exportType(job: Job, type: string, add: (resources: Resource[]) => Promise<void>): Promise<void> {
    const access = job.access.filterFor(type);
    if (access === 'denied') return;
    const searches = searchesOf(job, type);
    const seen = searches.length > 1 ? new Set<string>() : undefined;
    const view = job.access.deid?.();
    for (const search of searches) {
      const req = parseSearchRequest(defs, type, search);
      // A search parameter this server cannot run would select every row: never exported so.
      if (req.ignored.length > 0) {
        logger.warn({ exportId: job.id, type, ignored: req.ignored }, 'bulk export skipped a search it cannot run');
        continue;
      }
      let after = '0';
      for (;;) {
        if (job.cancelled || stopped) throw new Cancelled();
        const window: AccessFilter = (a) => ({
          sql: `${a}.rid > ?::bigint AND ${a}.last_updated <= ?${job.request.since ? ` AND ${a}.last_updated > ?` : ''}`,
          bindings: [after, job.transactionTime, ...(job.request.since ? [job.request.since] : [])],
        });
        const page = await findMatches(
          { db: knex, defs, baseUrl: '', access: bothFilters(access, window), searchView: view?.searchView },
          { ...req, count: pageSize, offset: 0, sort: [], includes: [], revincludes: [], total: 'none', summary: undefined, elements: undefined },
        );
        const fresh = page.matches.filter((m) => !seen || (!seen.has(m.id) && seen.add(m.id)));
        if (fresh.length > 0) await add(await shape(job, view, fresh));
        if (!page.more || page.matches.length === 0) break;
        after = page.matches[page.matches.length - 1].rid;
      }
    }
  }

  /**
   * What was deleted since `_since` (IG: the manifest's `deleted` files): a transaction Bundle
   * with one DELETE entry per resource. A deleted resource keeps no content, so at Patient and
   * Group level only the deleted Patients themselves can be placed (the Group's members, or any
   * Patient the caller may read); other types are reported at system level.
   */
  async function exportDeletions(job: Job, type: string, add: (resources: Resource[]) => Promise<void>): Promise<void> {
    const access = job.access.filterFor(type);
    if (access === 'denied' || !job.request.since) return;
    if (job.request.level.kind !== 'system' && type !== 'Patient') return;
    const a = access ? access('r') : { sql: 'TRUE', bindings: [] };
    const members = job.patients && type === 'Patient' ? job.patients : undefined;
    let after = '0';
    for (;;) {
      if (job.cancelled || stopped) throw new Cancelled();
      const rows = await queryRows<{ rid: string; id: string }>(
        knex,
        `SELECT r.rid, r.id FROM fhir_resource r WHERE r.resource_type = ? AND r.deleted AND r.last_updated > ? AND r.last_updated <= ? AND r.rid > ?::bigint` +
          `${members ? ' AND r.id = ANY(?::text[])' : ''} AND (${a.sql}) ORDER BY r.rid LIMIT ?`,
        [type, job.request.since, job.transactionTime, after, ...(members ? [members] : []), ...a.bindings, pageSize],
      );
      if (rows.length === 0) return;
      await add(rows.map((r) => ({ resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'DELETE', url: `${type}/${r.id}` } }] }) as Resource));
      if (rows.length < pageSize) return;
      after = String(rows[rows.length - 1].rid);
    }
  }

  async function shape(job: Job, view: DeidView | undefined, stored: StoredResource[]): Promise<Resource[]> {
    let resources = stored.map((s) => s.content as Resource);
    if (view) resources = await view.deidentify(resources);
    const elements = job.request.elements;
    if (!elements) return resources;
    return resources.map((r) => {
      const names = [...(elements.get('*') ?? []), ...(elements.get(r.resourceType) ?? [])];
      return names.length > 0 ? applyElements(r, names) : r;
    });
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
    const job: Job = { id, request, access: deps.accessOf(jsonOf(row.grant)), transactionTime: new Date(row.transaction_time), patients, cancelled: false };
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

  /**
   * Writes one output file to the blob store, as a STOW writes an instance: claimed in the blob
   * ledger before it gets its name (the claim is the commit's fence), so the orphan sweeper never
   * removes it under a file row about to name it. Resolves with its key.
   */
  async function storeBlob(blobs: BlobStore, body: Buffer): Promise<string> {
    const staged = blobs.stage();
    try {
      staged.writable.end(body);
      const { sha256, size } = await staged.done;
      const claim = claimBlob(knex, sha256, size);
      claim.catch(() => undefined); // reported by the commit it fences
      return (await blobs.commit(staged, claim)).key;
    } catch (err) {
      await blobs.discard(staged);
      throw err;
    }
  }

  /** Collects NDJSON lines of one type and writes a file row each `perFile` resources or FILE_BYTES bytes. */
  function fileWriter(job: Job, type: string, nextSeq: () => number, output: ExportFile[]) {
    let lines: string[] = [];
    let bytes = 0;
    const flush = async () => {
      if (lines.length === 0) return;
      const seq = nextSeq();
      const body = Buffer.from(lines.join('\n') + '\n', 'utf8');
      const content = deps.blobs ? { blob_key: await storeBlob(deps.blobs, body) } : { body };
      await knex('bulk_export_files').insert({ export_id: job.id, seq, resource_type: type, count: lines.length, ...content });
      output.push({ type, url: `$export-output/${job.id}/${seq}`, count: lines.length });
      lines = [];
      bytes = 0;
    };
    const add = async (resources: Resource[]) => {
      for (const r of resources) {
        const line = JSON.stringify(r);
        lines.push(line);
        bytes += line.length;
        if (lines.length >= perFile || bytes >= FILE_BYTES) await flush();
      }
    };
    return { add, flush };
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
      const job: Job = { id, request, access, transactionTime: new Date(now), patients, cancelled: false };
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
      const row = await knex('bulk_export_files as f')
        .join('bulk_exports as e', 'e.id', 'f.export_id')
        .where({ 'f.export_id': id, 'f.seq': seq, 'e.owner': owner, 'e.state': 'completed' })
        .first('f.body', 'f.blob_key');
      if (!row) return undefined;
      if (row.blob_key === null || row.blob_key === undefined) return Buffer.from(row.body);
      if (!deps.blobs) throw new Error(`bulk export file ${id}/${seq} is in the blob store, and this server has none`);
      return deps.blobs.read(row.blob_key);
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

/** The Patients a Group lists as current members. */
function groupMembers(group: Group): string[] {
  const ids = new Set<string>();
  for (const m of group.member ?? []) {
    if (m.inactive) continue;
    const match = /^Patient\/([A-Za-z0-9\-.]{1,64})$/.exec(m.entity?.reference ?? '');
    if (match) ids.add(match[1]);
  }
  return [...ids];
}

/** Two searches as one (their parameters ANDed). */
function mergeQueries(a: Record<string, string[]>, b: Record<string, string[]>): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const q of [a, b]) for (const [k, v] of Object.entries(q)) out[k] = [...(out[k] ?? []), ...v];
  return out;
}
