/**
 * Burned-in annotation (PS3.15 E.1.1 and E.3.1 Clean Pixel Data): an instance is withheld from
 * researchers when BurnedInAnnotation (0028,0301) is YES, or when its modality or SOP Class is
 * one where text in the pixels is likely (US, SC, OP, Secondary Capture) and it is not declared
 * NO, until a data manager (or admin) records a clearance.
 */
import type { Knex } from 'knex';
import { fhirError } from '../fhir/outcome';
import { objectBody } from '../http/json-body';
import type { PrivacyActor } from './privacy-actor';

type Db = Knex | Knex.Transaction;

/** The rule's configuration (config.privacy). */
export interface WithholdRule {
  withholdModalities: readonly string[];
  withholdSopClassPrefixes: readonly string[];
}

/** A clearance as the API shows it. */
export interface BurnedInClearance {
  sopInstanceUID: string;
  clearedBy: string;
  clearedAt: string;
  note: string | null;
}

const UID_RE = /^[0-2](\.(0|[1-9]\d{0,38})){1,63}$/;

/** SOP Instance UIDs (of those given) withheld and not cleared. */
export async function findWithheldInstances(db: Db, rule: WithholdRule, sopInstanceUids: readonly string[]): Promise<Set<string>> {
  const uids = [...new Set(sopInstanceUids)];
  if (uids.length === 0) return new Set();
  const burnedIn = `upper(btrim(i.dataset->'00280301'->'Value'->>0))`;
  const classes = rule.withholdSopClassPrefixes.map(() => `(i.sop_class_uid = ? OR i.sop_class_uid LIKE ?)`).join(' OR ') || 'false';
  const classBindings = rule.withholdSopClassPrefixes.flatMap((p) => [p, `${p}.%`]);
  const rows = await db('instances as i')
    .join('series as s', 's.id', 'i.series_pk')
    .whereIn('i.sop_instance_uid', uids)
    .whereNotExists(function cleared(this: Knex.QueryBuilder) {
      this.select(db.raw('1')).from('burned_in_clearances as c').whereRaw('c.sop_instance_uid = i.sop_instance_uid');
    })
    .whereRaw(
      `(${burnedIn} = 'YES' OR ((upper(btrim(coalesce(s.modality, i.dataset->'00080060'->'Value'->>0, ''))) = ANY(?::text[]) OR ${classes}) AND coalesce(${burnedIn}, '') <> 'NO'))`,
      [[...rule.withholdModalities], ...classBindings],
    )
    .pluck('i.sop_instance_uid');
  return new Set(rows as string[]);
}

/** 400 unless `value` is a UID (PS3.5 9.1). */
export function parseSopInstanceUid(value: unknown): string {
  const uid = typeof value === 'string' ? value.trim() : '';
  if (!UID_RE.test(uid) || uid.length > 64) throw fhirError(400, 'invalid', 'sopInstanceUID: a SOP Instance UID (PS3.5 9.1) is required');
  return uid;
}

/** 404 unless the instance exists in a project the actor holds (admin: anywhere); the same answer for both. */
async function assertInstanceHeld(db: Db, actor: PrivacyActor, uid: string): Promise<void> {
  const q = db('instances as i').where('i.sop_instance_uid', uid);
  if (actor.projects !== 'all') {
    const projects = [...actor.projects];
    q.whereExists(function held(this: Knex.QueryBuilder) {
      this.select(db.raw('1')).from('project_studies as ps').whereRaw('ps.study_pk = i.study_pk').whereIn('ps.project_id', projects);
    });
  }
  if (!(await q.first('i.id'))) throw fhirError(404, 'not-found', `SOP Instance ${uid} not found in the caller's projects`);
}

function shown(row: { sop_instance_uid: string; cleared_by: string; cleared_at: Date | string; note: string | null }): BurnedInClearance {
  return { sopInstanceUID: row.sop_instance_uid, clearedBy: row.cleared_by, clearedAt: new Date(row.cleared_at).toISOString(), note: row.note };
}

/** Records (or renews) a clearance: the instance is shown to researchers from now on. */
export async function clearBurnedIn(db: Db, actor: PrivacyActor, body: unknown): Promise<BurnedInClearance> {
  const { sopInstanceUID, note } = objectBody(body, '{sopInstanceUID, note?}');
  const uid = parseSopInstanceUid(sopInstanceUID);
  if (note !== undefined && note !== null && (typeof note !== 'string' || note.length > 1000)) throw fhirError(400, 'invalid', 'note: text of at most 1000 characters');
  await assertInstanceHeld(db, actor, uid);
  const [row] = await db('burned_in_clearances')
    .insert({ sop_instance_uid: uid, cleared_by: actor.subject, note: note ?? null })
    .onConflict('sop_instance_uid')
    .merge({ cleared_by: actor.subject, cleared_at: db.fn.now(), note: note ?? null })
    .returning(['sop_instance_uid', 'cleared_by', 'cleared_at', 'note']);
  return shown(row);
}

/** Removes a clearance: the instance is withheld again. 404 when there is none. */
export async function unclearBurnedIn(db: Db, actor: PrivacyActor, sopParam: unknown): Promise<void> {
  const uid = parseSopInstanceUid(sopParam);
  await assertInstanceHeld(db, actor, uid);
  const removed = await db('burned_in_clearances').where('sop_instance_uid', uid).delete();
  if (!removed) throw fhirError(404, 'not-found', `SOP Instance ${uid} has no burned-in annotation clearance`);
}
