import type { Knex } from 'knex';
import type { Actor } from '../../auth/actor';
import { fhirError, notFound } from '../outcome';
import { awaitingText, jsonOf, type ExportRefusal } from './bulk-export';
import type { StoredExportJob } from './export-request';

/**
 * The approval of cohort exports: a researcher's bulk export waits (`awaiting-approval`) until a
 * principal investigator of each project it reads has approved it (an admin approves for all).
 * One refusal ends it (`refused`; the requester's status poll answers 403 with the reason). PIs
 * see and decide only the exports that read one of their projects; an approval is recorded with
 * who gave it, for which project and when. The export's transactionTime is the moment of the
 * last approval, when it starts: what it exports is the data as it is then.
 */

/** Who decides: the caller of the governance API, as the access guard decided it. */
export type Approver = Actor;

/** One project's approval. */
export interface ExportApproval {
  project: string;
  by: string;
  role: string;
  at: string;
}

/** What an export reads: its level, and the parameters that narrow it. */
export interface ExportScope {
  level: 'system' | 'patient' | 'group';
  groupId?: string;
  types?: string[];
  since?: string;
  /** `_typeFilter` searches, as `Type?query`. */
  typeFilters?: string[];
  /** `_elements`, as `Type.element` (or `element` for every type). */
  elements?: string[];
  /** How many patients it covers, when fixed at kick-off (a Group's members, or `patient`). */
  patients?: number;
}

/** An export as its approvers see it: who asked what, of which projects, and where it stands. */
export interface ExportApprovalView {
  id: string;
  state: string;
  /** The subject of the token that kicked the export off. */
  requester: string;
  requesterRole?: string;
  /** The kick-off URL. */
  request: string;
  /** What the export reads, as kept at kick-off (a POST kick-off's parameters are not in its URL). */
  reads?: ExportScope;
  projects: string[];
  approvals: ExportApproval[];
  /** Projects still to approve. */
  awaiting: string[];
  refusal?: ExportRefusal;
  createdAt: string;
}

const STATES = new Set(['awaiting-approval', 'refused', 'accepted', 'in-progress', 'completed', 'failed']);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** Exports listed at most per request (newest first). */
const LIST_LIMIT = 500;

interface ExportRow {
  id: string;
  state: string;
  owner: string;
  request: string;
  grant: unknown;
  projects: string[];
  approvals: unknown;
  refusal: unknown;
  job: unknown;
  created_at: Date | string;
}

/** The exports to approve that read one of the approver's projects; `state` narrows them (default: every state). */
export async function listExportApprovals(knex: Knex, approver: Approver, state?: string): Promise<ExportApprovalView[]> {
  if (state !== undefined && !STATES.has(state)) throw fhirError(400, 'invalid', `state: one of ${[...STATES].join(', ')}`);
  const q = knex<ExportRow>('bulk_exports').whereNotNull('projects').orderBy('created_at', 'desc').limit(LIST_LIMIT);
  if (state) q.where({ state });
  if (approver.projects !== 'all') q.whereRaw('projects && ?::text[]', [[...approver.projects]]);
  return ((await q.select('*')) as ExportRow[]).map(viewOf);
}

/** One export to approve, if it reads one of the approver's projects (404 otherwise, as for none). */
export async function getExportApproval(knex: Knex, approver: Approver, id: string): Promise<ExportApprovalView> {
  return viewOf(await visibleRow(knex, approver, id));
}

/**
 * Approves an export for every project of it the approver speaks for (an admin: all). When no
 * project is left to approve, the export is `accepted` with the transactionTime of now: the
 * caller then runs it (BulkExports.resume). 409 when it is not waiting, or waits on others only.
 */
export async function approveExport(knex: Knex, approver: Approver, id: string): Promise<{ view: ExportApprovalView; start: boolean }> {
  return knex.transaction(async (trx) => {
    const row = await visibleRow(trx, approver, id, true);
    assertAwaiting(row);
    const approvals = approvalsOf(row);
    const approved = new Set(approvals.map((a) => a.project));
    const mine = row.projects.filter((p) => !approved.has(p) && (approver.projects === 'all' || approver.projects.includes(p)));
    if (mine.length === 0) {
      throw fhirError(409, 'conflict', `Export ${id} is already approved for your projects; it ${awaitingText(row.projects.filter((p) => !approved.has(p)))}`);
    }
    const at = new Date().toISOString();
    const next = [...approvals, ...mine.map((project) => ({ project, by: approver.subject, role: approver.role, at }))];
    const left = row.projects.filter((p) => !next.some((a) => a.project === p));
    const start = left.length === 0;
    const change: Record<string, unknown> = { approvals: JSON.stringify(next) };
    if (start) {
      Object.assign(change, { state: 'accepted', progress: 'queued', transaction_time: trx.fn.now(), heartbeat_at: trx.fn.now(), expires_at: trx.raw(`now() + interval '1 day'`) });
    } else {
      change.progress = awaitingText(left);
    }
    const [updated] = (await trx('bulk_exports').where({ id }).update(change).returning('*')) as ExportRow[];
    return { view: viewOf(updated), start };
  });
}

/** Refuses an export (one refusal ends it); the reason reaches the requester. 409 when it is not waiting. */
export async function refuseExport(knex: Knex, approver: Approver, id: string, reason: unknown): Promise<ExportApprovalView> {
  if (reason !== undefined && (typeof reason !== 'string' || reason.length > 500)) throw fhirError(400, 'invalid', 'reason: a text of at most 500 characters');
  return knex.transaction(async (trx) => {
    const row = await visibleRow(trx, approver, id, true);
    assertAwaiting(row);
    const project = approver.projects === 'all' ? undefined : row.projects.find((p) => (approver.projects as readonly string[]).includes(p));
    const refusal: ExportRefusal = { by: approver.subject, role: approver.role, at: new Date().toISOString() };
    if (project) refusal.project = project;
    if (typeof reason === 'string' && reason.trim()) refusal.reason = reason.trim();
    const [updated] = (await trx('bulk_exports')
      .where({ id })
      .update({ state: 'refused', refusal: JSON.stringify(refusal), progress: null, finished_at: trx.fn.now(), expires_at: trx.raw(`now() + interval '1 day'`) })
      .returning('*')) as ExportRow[];
    return viewOf(updated);
  });
}

async function visibleRow(knex: Knex, approver: Approver, id: string, lock = false): Promise<ExportRow> {
  if (!UUID.test(id)) throw notFound(`No export ${id} to approve`);
  const q = knex('bulk_exports').where({ id }).whereNotNull('projects').first('*');
  if (lock) q.forUpdate();
  const row = (await q) as ExportRow | undefined;
  if (!row || (approver.projects !== 'all' && !row.projects.some((p) => (approver.projects as readonly string[]).includes(p)))) {
    throw notFound(`No export ${id} to approve`);
  }
  return row;
}

function assertAwaiting(row: ExportRow): void {
  if (row.state !== 'awaiting-approval') throw fhirError(409, 'conflict', `Export ${row.id} is ${row.state}, not awaiting approval`);
}

function approvalsOf(row: ExportRow): ExportApproval[] {
  return jsonOf<ExportApproval[]>(row.approvals) ?? [];
}

function scopeOf(job: StoredExportJob): ExportScope {
  const scope: ExportScope = { level: job.level.kind };
  if (job.level.kind === 'group') scope.groupId = job.level.groupId;
  if (job.types) scope.types = job.types;
  if (job.since) scope.since = job.since;
  const filters = job.typeFilters.flatMap(([type, queries]) =>
    queries.map((q) => `${type}?${Object.entries(q).flatMap(([k, vs]) => vs.map((v) => `${k}=${v}`)).join('&')}`),
  );
  if (filters.length > 0) scope.typeFilters = filters;
  const elements = (job.elements ?? []).flatMap(([type, names]) => names.map((n) => (type === '*' ? n : `${type}.${n}`)));
  if (elements.length > 0) scope.elements = elements;
  if (job.patients) scope.patients = job.patients.length;
  return scope;
}

function viewOf(row: ExportRow): ExportApprovalView {
  const approvals = approvalsOf(row);
  const grant = jsonOf<{ principal?: { subject?: string; role?: string } }>(row.grant);
  const view: ExportApprovalView = {
    id: row.id,
    state: row.state,
    requester: grant?.principal?.subject ?? row.owner.slice(row.owner.indexOf('|') + 1),
    request: row.request,
    projects: row.projects,
    approvals,
    awaiting: row.state === 'awaiting-approval' ? row.projects.filter((p) => !approvals.some((a) => a.project === p)) : [],
    createdAt: new Date(row.created_at).toISOString(),
  };
  if (grant?.principal?.role) view.requesterRole = grant.principal.role;
  const job = jsonOf<StoredExportJob>(row.job);
  if (job) view.reads = scopeOf(job);
  const refusal = jsonOf<ExportRefusal>(row.refusal);
  if (refusal) view.refusal = refusal;
  return view;
}
