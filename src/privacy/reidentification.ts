/**
 * The audited way back from a PatientKey to the patient (HIPAA 164.514(c) re-identification
 * code held by the covered entity): a PI of a project files a request (reason, approval
 * reference such as the IRB number, the PatientKeys); an admin, or another PI of the project,
 * approves or refuses it (never the PI who filed it: a second person decides); the PI
 * who filed it resolves the approved keys to issuer and MRN exactly once. Keys are fixed at
 * filing, so an approval can neither be widened nor used twice. Every step is audited by the
 * caller's `audit` callback in the step's transaction.
 */
import type { Knex } from 'knex';
import { fhirError } from '../fhir/outcome';
import { objectBody, requiredText } from '../http/json-body';
import { isPatientKey } from './patient-keys';
import { actorHolds, assertActorHolds, parseProjectId, type PrivacyActor } from './privacy-actor';
import type { ReidentificationAuditFacts } from './privacy-audit';

type Db = Knex | Knex.Transaction;

/** Writes the AuditEvent of a step (in the step's transaction). */
export type StepAudit = (db: Db, facts: ReidentificationAuditFacts) => Promise<void>;

/** A request as the API shows it. */
export interface ReidentificationRequest {
  id: string;
  project: string;
  requester: string;
  reason: string;
  approvalReference: string;
  patientKeys: string[];
  purposeOfUse: string;
  status: 'requested' | 'approved' | 'refused' | 'resolved';
  decidedBy: string | null;
  decidedAt: string | null;
  resolvedAt: string | null;
  createdAt: string;
}

/** One resolved key: the linkage table's issuer (identifier system) and MRN; null for a patient that had no identifier. */
export interface ResolvedPatient {
  patientKey: string;
  issuer: string | null;
  mrn: string | null;
}

/** What a filing names, parsed. */
export interface ReidentificationFiling {
  project: string;
  reason: string;
  approvalReference: string;
  patientKeys: string[];
  purposeOfUse: string;
}

/** The PurposeOfUse when the PI names none: healthcare research (v3 ActReason HRESCH). */
export const DEFAULT_PURPOSE_OF_USE = 'HRESCH';
const MAX_KEYS = 1000;

function iso(v: Date | string | null | undefined): string | null {
  return v === null || v === undefined ? null : new Date(v).toISOString();
}

function shown(r: Record<string, any>): ReidentificationRequest {
  return {
    id: String(r.id),
    project: r.project_id,
    requester: r.requester,
    reason: r.reason,
    approvalReference: r.approval_reference,
    patientKeys: [...r.patient_keys],
    purposeOfUse: r.purpose_of_use,
    status: r.status,
    decidedBy: r.decided_by ?? null,
    decidedAt: iso(r.decided_at),
    resolvedAt: iso(r.resolved_at),
    createdAt: iso(r.created_at)!,
  };
}

/** Validates a filing body (400 on anything malformed). */
export function parseFiling(body: unknown): ReidentificationFiling {
  const b = objectBody(body, '{project, reason, approvalReference, patientKeys[], purposeOfUse?}');
  const project = parseProjectId(b.project);
  const reason = requiredText(b.reason, 'reason', 2000);
  const approvalReference = requiredText(b.approvalReference, 'approvalReference', 200);
  const keys = b.patientKeys;
  if (!Array.isArray(keys) || keys.length === 0 || keys.length > MAX_KEYS) throw fhirError(400, 'invalid', `patientKeys: an array of 1 to ${MAX_KEYS} PatientKeys is required`);
  if (!keys.every(isPatientKey)) throw fhirError(400, 'invalid', 'patientKeys: every entry must be a PatientKey (PK followed by 20 base32 characters)');
  const purpose = b.purposeOfUse ?? DEFAULT_PURPOSE_OF_USE;
  if (typeof purpose !== 'string' || !/^[A-Z][A-Z0-9]{1,31}$/.test(purpose)) throw fhirError(400, 'invalid', 'purposeOfUse: a v3 PurposeOfUse code such as HRESCH is required');
  return { project, reason, approvalReference, patientKeys: [...new Set(keys as string[])], purposeOfUse: purpose };
}

/** The PatientKeys (of those given) that have a DICOM or FHIR patient in `project`. */
export async function keysInProject(db: Db, project: string, keys: readonly string[]): Promise<Set<string>> {
  if (keys.length === 0) return new Set();
  const result = await db.raw(
    `SELECT k.patient_key FROM patient_keys k
      WHERE k.patient_key = ANY(?::text[])
        AND (EXISTS (SELECT 1 FROM patients p JOIN studies st ON st.patient_pk = p.id JOIN project_studies ps ON ps.study_pk = st.id
                      WHERE p.patient_key_id = k.id AND ps.project_id = ?)
          OR EXISTS (SELECT 1 FROM fhir_patient_keys f JOIN project_resources pr ON pr.resource_type = 'Patient' AND pr.resource_id = f.resource_id
                      WHERE f.patient_key_id = k.id AND pr.project_id = ?))`,
    [[...keys], project, project],
  );
  return new Set((result.rows as Array<{ patient_key: string }>).map((r) => r.patient_key));
}

/** Files a request: a PI, for a project of theirs, for PatientKeys of that project's patients. */
export async function fileReidentificationRequest(knex: Knex, actor: PrivacyActor, body: unknown, audit: StepAudit): Promise<ReidentificationRequest> {
  const filing = parseFiling(body);
  if (actor.role !== 'pi') throw fhirError(403, 'forbidden', `access denied: only a PI of project ${filing.project} may file a re-identification request`);
  assertActorHolds(actor, filing.project);
  return knex.transaction(async (trx) => {
    const known = await keysInProject(trx, filing.project, filing.patientKeys);
    // One answer whichever keys are missing: nothing says which exist in other projects.
    if (known.size !== filing.patientKeys.length) throw fhirError(404, 'not-found', `one or more PatientKeys have no patient in project ${filing.project}`);
    const [row] = await trx('reidentification_requests')
      .insert({
        project_id: filing.project,
        requester: actor.subject,
        reason: filing.reason,
        approval_reference: filing.approvalReference,
        patient_keys: filing.patientKeys,
        purpose_of_use: filing.purposeOfUse,
      })
      .returning('*');
    const request = shown(row);
    await audit(trx, { action: 'create', status: 201, step: 'file', requestId: request.id, project: request.project, patientKeys: request.patientKeys, purposeOfUse: request.purposeOfUse });
    return request;
  });
}

/** The audit facts a refusal carries once the request is known (the route's refusal event uses them). */
export type RefusalFacts = Pick<ReidentificationAuditFacts, 'project' | 'patientKeys' | 'purposeOfUse' | 'requestId'>;

/** An OperationOutcome refusal about a known request, carrying its audit facts. */
function refusal(row: Record<string, any>, status: number, code: 'forbidden' | 'conflict', message: string): Error {
  const err = fhirError(status, code, message) as ReturnType<typeof fhirError> & { auditFacts?: RefusalFacts };
  err.auditFacts = { requestId: String(row.id), project: row.project_id, patientKeys: [...row.patient_keys], purposeOfUse: row.purpose_of_use };
  return err;
}

function parseId(value: unknown): string {
  if (typeof value !== 'string' || !/^[1-9]\d{0,17}$/.test(value)) throw fhirError(404, 'not-found', 're-identification request not found');
  return value;
}

async function visibleRow(db: Db, actor: PrivacyActor, idParam: unknown, forUpdate = false): Promise<Record<string, any>> {
  const id = parseId(idParam);
  const q = db('reidentification_requests').where('id', id);
  if (forUpdate) q.forUpdate();
  const row = await q.first('*');
  if (!row || !actorHolds(actor, row.project_id)) throw fhirError(404, 'not-found', `re-identification request ${id} not found`);
  return row;
}

/** The requests the actor may see (admin: all; a PI: those of their projects), newest first; `project` and `status` narrow. */
export async function listReidentificationRequests(db: Db, actor: PrivacyActor, query: { project?: unknown; status?: unknown }): Promise<ReidentificationRequest[]> {
  const q = db('reidentification_requests').orderBy('id', 'desc').limit(1000);
  if (actor.projects !== 'all') q.whereIn('project_id', [...actor.projects]);
  if (query.project !== undefined) q.where('project_id', parseProjectId(query.project));
  if (query.status !== undefined) {
    if (typeof query.status !== 'string' || !['requested', 'approved', 'refused', 'resolved'].includes(query.status)) throw fhirError(400, 'invalid', 'status: requested, approved, refused or resolved');
    q.where('status', query.status);
  }
  return (await q.select('*')).map(shown);
}

/** One request the actor may see (404 otherwise, the same for a missing one). */
export async function getReidentificationRequest(db: Db, actor: PrivacyActor, id: unknown): Promise<ReidentificationRequest> {
  return shown(await visibleRow(db, actor, id));
}

/**
 * Approves or refuses a request still `requested`; 409 for any other status. Deciders: an admin,
 * or a PI of the request's project other than the one who filed it (a PI approves the
 * re-identification requests of their projects; a second person always decides). A PI of
 * another project finds no such request (404).
 */
export async function decideReidentificationRequest(knex: Knex, actor: PrivacyActor, id: unknown, decision: 'approved' | 'refused', audit: StepAudit): Promise<ReidentificationRequest> {
  if (actor.role !== 'admin' && actor.role !== 'pi') throw fhirError(403, 'forbidden', 'access denied: only an admin or a PI of the project may decide a re-identification request');
  return knex.transaction(async (trx) => {
    const row = await visibleRow(trx, actor, id, true);
    if (actor.role === 'pi' && row.requester === actor.subject) {
      throw refusal(row, 403, 'forbidden', `access denied: the PI who filed re-identification request ${row.id} may not decide it; another PI of the project or an admin does`);
    }
    if (row.status !== 'requested') throw refusal(row, 409, 'conflict', `re-identification request ${row.id} is ${row.status}: only a request still requested can be ${decision}`);
    const [updated] = await trx('reidentification_requests')
      .where({ id: row.id, status: 'requested' })
      .update({ status: decision, decided_by: actor.subject, decided_at: trx.fn.now() })
      .returning('*');
    const request = shown(updated);
    await audit(trx, { action: 'update', status: 200, step: decision === 'approved' ? 'approve' : 'refuse', requestId: request.id, project: request.project, patientKeys: request.patientKeys, purposeOfUse: request.purposeOfUse });
    return request;
  });
}

/**
 * Resolves an approved request, once, for the PI who filed it: the issuer and MRN of exactly
 * the keys filed. The row lock and status change make a second (or concurrent) call a 409.
 */
export async function resolveReidentificationRequest(knex: Knex, actor: PrivacyActor, id: unknown, audit: StepAudit): Promise<{ request: ReidentificationRequest; patients: ResolvedPatient[] }> {
  return knex.transaction(async (trx) => {
    const row = await visibleRow(trx, actor, id, true);
    if (actor.role !== 'pi' || row.requester !== actor.subject) throw refusal(row, 403, 'forbidden', `access denied: only the PI who filed re-identification request ${row.id} may resolve it`);
    if (row.status === 'resolved') throw refusal(row, 409, 'conflict', `re-identification request ${row.id} was already resolved: an approval is used once`);
    if (row.status !== 'approved') throw refusal(row, 409, 'conflict', `re-identification request ${row.id} is ${row.status}, not approved`);
    const [updated] = await trx('reidentification_requests').where({ id: row.id, status: 'approved' }).update({ status: 'resolved', resolved_at: trx.fn.now() }).returning('*');
    const request = shown(updated);
    const identities = await trx('patient_keys as k')
      .leftJoin('patient_key_identities as i', 'i.patient_key_id', 'k.id')
      .whereIn('k.patient_key', request.patientKeys)
      .orderBy(['k.patient_key', 'i.created_at'])
      .select('k.patient_key', 'i.issuer', 'i.mrn');
    const first = new Map<string, ResolvedPatient>();
    for (const r of identities) if (!first.has(r.patient_key)) first.set(r.patient_key, { patientKey: r.patient_key, issuer: r.issuer ?? null, mrn: r.mrn ?? null });
    const patients = request.patientKeys.map((k) => first.get(k) ?? { patientKey: k, issuer: null, mrn: null });
    await audit(trx, { action: 'operation', status: 200, step: 'resolve', requestId: request.id, project: request.project, patientKeys: request.patientKeys, purposeOfUse: request.purposeOfUse });
    return { request, patients };
  });
}
