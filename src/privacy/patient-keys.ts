/**
 * PatientKeys: a random pseudonym and a non-zero date offset per patient, assigned at first
 * sight (HIPAA 164.514(c): the re-identification code is not derived from the MRN). A returning
 * patient is recognised by HMAC(key, normalised issuer | normalised MRN), so DICOM (PatientID +
 * IssuerOfPatientID) and FHIR (Patient.identifier system + value) meet on one key; the issuer and
 * MRN themselves go only to the linkage table (patient_key_identities).
 */
import { createHmac, randomInt } from 'node:crypto';
import type { Knex } from 'knex';
import { keyedStatement, preparedRaw, singleKeys } from '../db/prepared-statement';
import { issuerSystem } from '../fhir/dicom/dicom-codes';
import type { PatientPseudonym } from './privacy-types';

type Db = Knex | Knex.Transaction;

/** A patient identity as the linkage table holds it: the issuer as an identifier system URI, and the MRN. */
export interface PatientIdentity {
  issuer: string;
  mrn: string;
}

/** What key assignment needs: the HMAC key and the offset range. */
export interface PatientKeyOptions {
  key: Buffer;
  dateShiftMaxDays: number;
}

interface PatientRow {
  id: string | number;
  patient_id: string | null;
  issuer_of_patient_id: string | null;
  patient_key_id: string | number | null;
  fhir_id: string | null;
}

interface KeyRow {
  id: string | number;
  patient_key: string;
  date_offset_days: number;
}

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const MR_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v2-0203';
const OID_RE = /^[0-2](\.(0|[1-9]\d*))+$/;

/** A new PatientKey: `PK` + 20 base32 characters (RFC 4648 alphabet, 100 random bits). */
export function generatePatientKey(): string {
  let out = 'PK';
  for (let i = 0; i < 20; i++) out += BASE32[randomInt(32)];
  return out;
}

/** True for text shaped like a PatientKey. */
export function isPatientKey(text: unknown): text is string {
  return typeof text === 'string' && /^PK[A-Z2-7]{20}$/.test(text);
}

/** A date offset drawn uniformly from [-max, -1] and [1, max] days (never 0). */
export function drawDateOffset(maxDays: number): number {
  const max = Math.max(1, Math.floor(maxDays));
  const v = randomInt(0, 2 * max);
  return v < max ? v - max : v - max + 1;
}

/**
 * The canonical issuer of an identifier system: a bare OID and any spelling of `urn:oid:` become
 * `urn:oid:<oid>`, no system at all becomes the system DICOM uses for a PatientID without issuer.
 */
export function normaliseIssuer(system: string | null | undefined): string {
  const s = system?.trim() ?? '';
  if (s === '') return issuerSystem(undefined);
  if (OID_RE.test(s)) return `urn:oid:${s}`;
  const oid = /^urn:oid:(.+)$/i.exec(s);
  if (oid && OID_RE.test(oid[1])) return `urn:oid:${oid[1]}`;
  return s;
}

/** The MRN as compared: trimmed (DICOM pads with spaces), Unicode NFC, case kept. */
export function normaliseMrn(value: string): string {
  return value.trim().normalize('NFC');
}

/** The identity of a DICOM patient (PatientID + IssuerOfPatientID, mapped like the FHIR sync does); none without PatientID. */
export function dicomIdentity(patientId: string | null | undefined, issuerOfPatientId: string | null | undefined): PatientIdentity | undefined {
  const mrn = normaliseMrn(patientId ?? '');
  if (mrn === '') return undefined;
  return { issuer: normaliseIssuer(issuerSystem(issuerOfPatientId)), mrn };
}

/** A FHIR Patient's identities, medical record numbers (v2-0203 MR) first, then the rest in order. */
export function fhirIdentities(patient: { identifier?: Array<{ system?: string; value?: string; type?: { coding?: Array<{ system?: string; code?: string }> } }> }): PatientIdentity[] {
  const ids = (patient.identifier ?? []).filter((i) => typeof i.value === 'string' && normaliseMrn(i.value) !== '');
  const isMr = (i: (typeof ids)[number]) => i.type?.coding?.some((c) => c.code === 'MR' && (c.system === undefined || c.system === MR_SYSTEM)) ?? false;
  const ordered = [...ids.filter(isMr), ...ids.filter((i) => !isMr(i))];
  const seen = new Set<string>();
  const out: PatientIdentity[] = [];
  for (const i of ordered) {
    const identity = { issuer: normaliseIssuer(i.system), mrn: normaliseMrn(i.value!) };
    const k = `${identity.issuer}|${identity.mrn}`;
    if (!seen.has(k)) {
      seen.add(k);
      out.push(identity);
    }
  }
  return out;
}

/** HMAC-SHA-256(key, issuer | MRN), hex: how the same patient from the same issuer is recognised. */
export function identityHmac(key: Buffer, identity: PatientIdentity): string {
  return createHmac('sha256', key).update(`${identity.issuer}|${identity.mrn}`).digest('hex');
}

function pseudonymOf(row: KeyRow): PatientPseudonym {
  return { patientKey: row.patient_key, dateOffsetDays: Number(row.date_offset_days) };
}

/**
 * The key row of an identity, created on first sight. Concurrency-safe: the insert yields to a
 * concurrent one on the unique HMAC (ON CONFLICT DO NOTHING waits for the other transaction),
 * then the row is read back, so two writers of the same new patient end with one key.
 */
async function ensureIdentifiedKey(db: Db, options: PatientKeyOptions, identity: PatientIdentity): Promise<KeyRow> {
  const hmac = identityHmac(options.key, identity);
  // One round trip when the patient is new: the key row and its linkage row together.
  const inserted = (
    await db.raw(
      `WITH ins AS (
         INSERT INTO patient_keys (patient_key, date_offset_days, identity_hmac) VALUES (?, ?, ?)
         ON CONFLICT (identity_hmac) DO NOTHING RETURNING id, patient_key, date_offset_days),
       link AS (INSERT INTO patient_key_identities (patient_key_id, issuer, mrn) SELECT id, ?, ? FROM ins)
       SELECT id, patient_key, date_offset_days FROM ins`,
      [generatePatientKey(), drawDateOffset(options.dateShiftMaxDays), hmac, identity.issuer, identity.mrn],
    )
  ).rows as KeyRow[];
  if (inserted.length > 0) return inserted[0];
  // A row existed (or a concurrent writer just committed one): this statement's fresh snapshot sees it.
  const row = await db('patient_keys').where({ identity_hmac: hmac }).first('id', 'patient_key', 'date_offset_days');
  if (!row) throw new Error('patient key vanished after insert');
  return row;
}

async function createRandomKey(db: Db, options: PatientKeyOptions): Promise<KeyRow> {
  const [row] = (await db('patient_keys')
    .insert({ patient_key: generatePatientKey(), date_offset_days: drawDateOffset(options.dateShiftMaxDays), identity_hmac: null })
    .returning(['id', 'patient_key', 'date_offset_days'])) as KeyRow[];
  return row;
}

/** The key of the first identity already known, else a new key for the first identity, else a random key. */
async function keyForIdentities(db: Db, options: PatientKeyOptions, identities: PatientIdentity[]): Promise<KeyRow> {
  if (identities.length === 0) return createRandomKey(db, options);
  const hmacs = identities.map((i) => identityHmac(options.key, i));
  const known = (await db('patient_keys').whereIn('identity_hmac', hmacs).select('id', 'patient_key', 'date_offset_days', 'identity_hmac')) as Array<KeyRow & { identity_hmac: string }>;
  for (const h of hmacs) {
    const hit = known.find((k) => k.identity_hmac === h);
    if (hit) return hit;
  }
  return ensureIdentifiedKey(db, options, identities[0]);
}

async function inTransaction<T>(db: Db, work: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
  if ((db as Knex.Transaction).isTransaction) return work(db as Knex.Transaction);
  return (db as Knex).transaction(work);
}

/**
 * Pseudonyms of DICOM index patients (patients.id), assigning keys to those without one. The
 * patient row is locked first, so concurrent callers agree on one key; a patient with no
 * PatientID shares the key its FHIR Patient may already have, else gets a random one.
 */
export async function assignDicomPatientKeys(db: Db, options: PatientKeyOptions, patientPks: readonly number[]): Promise<Map<number, PatientPseudonym>> {
  const out = new Map<number, PatientPseudonym>();
  const pks = [...new Set(patientPks.map(Number))].filter((n) => Number.isSafeInteger(n));
  if (pks.length === 0) return out;
  const rows = await db('patients as p')
    .join('patient_keys as k', 'k.id', 'p.patient_key_id')
    .whereIn('p.id', pks)
    .select('p.id as pk', 'k.patient_key', 'k.date_offset_days');
  for (const r of rows) out.set(Number(r.pk), pseudonymOf(r));
  const missing = pks.filter((pk) => !out.has(pk)).sort((a, b) => a - b);
  if (missing.length === 0) return out;
  await inTransaction(db, (trx) => assignLocked(trx, options, trx('patients').whereIn('id', missing), out, true));
  return out;
}

/**
 * Locks the patients `which` selects and gives each without a key one (the lock makes
 * concurrent callers agree); `linkFhir` also links the FHIR Patient each mirrors.
 */
async function assignLocked(trx: Knex.Transaction, options: PatientKeyOptions, which: Knex.QueryBuilder, out: Map<number, PatientPseudonym>, linkFhir: boolean): Promise<void> {
  const patients = (await which.orderBy('id').forUpdate().select('id', 'patient_id', 'issuer_of_patient_id', 'patient_key_id', 'fhir_id')) as PatientRow[];
  // New identities are inserted in HMAC order: two batches cannot deadlock on the unique index.
  const withIdentity = patients
    .map((p) => ({ p, identity: dicomIdentity(p.patient_id, p.issuer_of_patient_id) }))
    .sort((a, b) => (a.identity ? identityHmac(options.key, a.identity) : '').localeCompare(b.identity ? identityHmac(options.key, b.identity) : ''));
  for (const { p, identity } of withIdentity) {
    let row: KeyRow | undefined;
    if (p.patient_key_id) {
      row = await trx('patient_keys').where({ id: p.patient_key_id }).first('id', 'patient_key', 'date_offset_days');
    } else {
      if (!identity && p.fhir_id) {
        row = await trx('fhir_patient_keys as f').join('patient_keys as k', 'k.id', 'f.patient_key_id').where('f.resource_id', p.fhir_id).first('k.id', 'k.patient_key', 'k.date_offset_days');
      }
      row ??= identity ? await ensureIdentifiedKey(trx, options, identity) : await createRandomKey(trx, options);
      await trx('patients').where({ id: p.id }).update({ patient_key_id: row.id });
    }
    if (!row) continue;
    if (linkFhir && p.fhir_id) await trx('fhir_patient_keys').insert({ resource_id: p.fhir_id, patient_key_id: row.id }).onConflict('resource_id').ignore();
    out.set(Number(p.id), pseudonymOf(row));
  }
}

/**
 * Pseudonyms of FHIR Patients (by id), assigned lazily: the DICOM patient the Patient mirrors,
 * else the key of its identifiers (MR first), else a random key. Unknown ids are left out.
 */
export async function assignFhirPatientKeys(db: Db, options: PatientKeyOptions, patientIds: readonly string[]): Promise<Map<string, PatientPseudonym>> {
  const ids = [...new Set(patientIds)].filter((id) => typeof id === 'string' && id !== '');
  const out = new Map<string, PatientPseudonym>();
  if (ids.length === 0) return out;
  const read = async (which: string[]) => {
    const rows = await db('fhir_patient_keys as f').join('patient_keys as k', 'k.id', 'f.patient_key_id').whereIn('f.resource_id', which).select('f.resource_id', 'k.patient_key', 'k.date_offset_days');
    for (const r of rows) out.set(r.resource_id, pseudonymOf(r));
  };
  await read(ids);
  let missing = ids.filter((id) => !out.has(id));
  if (missing.length === 0) return out;

  // Patients mirrored from the DICOM index share the DICOM patient's key.
  const mirrored = await db('patients').whereIn('fhir_id', missing).select('id', 'fhir_id');
  if (mirrored.length > 0) {
    const byPk = await assignDicomPatientKeys(db, options, mirrored.map((m) => Number(m.id)));
    for (const m of mirrored) {
      const p = byPk.get(Number(m.id));
      if (p) out.set(m.fhir_id, p);
    }
    missing = missing.filter((id) => !out.has(id));
    if (missing.length === 0) return out;
  }

  const resources = await db('fhir_resource').where('resource_type', 'Patient').whereIn('id', missing).whereNotNull('content').select('id', 'content');
  const planned = resources
    .map((r) => ({ id: r.id as string, identities: fhirIdentities(typeof r.content === 'string' ? JSON.parse(r.content) : r.content) }))
    .sort((a, b) => (a.identities[0] ? identityHmac(options.key, a.identities[0]) : '').localeCompare(b.identities[0] ? identityHmac(options.key, b.identities[0]) : ''));
  for (const { id, identities } of planned) {
    const row = await keyForIdentities(db, options, identities);
    await db('fhir_patient_keys').insert({ resource_id: id, patient_key_id: row.id }).onConflict('resource_id').ignore();
  }
  await read(planned.map((p) => p.id));
  return out;
}

/**
 * Assigns the PatientKeys of the DICOM patients of studies, and links the FHIR Patient each
 * mirrors to the same key (the ingest hook calls this after the FHIR sync, in its transaction).
 */
export async function assignKeysForStudies(
  trx: Knex.Transaction,
  options: PatientKeyOptions,
  studyPks: readonly number[],
  /** Set when the caller's statement already ran LINK_KEYED_SQL for these studies: how many of their patients have no key. */
  linkedUnkeyed?: number,
): Promise<void> {
  if (studyPks.length === 0) return;
  const studies = [...new Set(studyPks.map(Number))];
  // One round trip when every patient has its key already (a study stored into before): link
  // the FHIR Patients of keyed patients and list the patients still without a key.
  const unkeyed =
    linkedUnkeyed ??
    (
      singleKeys(studies)
        ? await preparedRaw(trx, LINK_KEYED_LIST_UNKEYED.one, [studies[0], studies[0]])
        : await preparedRaw(trx, LINK_KEYED_LIST_UNKEYED.many, [studies, studies])
    ).rows.length;
  if (unkeyed === 0) return;
  const without = trx('patients')
    .whereNull('patient_key_id')
    .whereIn('id', trx('studies').whereIn('id', studies).select('patient_pk'));
  await assignLocked(trx, options, without, new Map(), false);
  await trx.raw(LINK_KEYED, [studies]);
}

/** Links the FHIR Patient of each keyed patient of the studies to the patient's key (mirrors share one key); `{keys}` as in keyedStatement(). */
export const LINK_KEYED_SQL = `INSERT INTO fhir_patient_keys (resource_id, patient_key_id)
  SELECT DISTINCT p.fhir_id, p.patient_key_id FROM studies st JOIN patients p ON p.id = st.patient_pk
  WHERE st.id {keys} AND p.fhir_id IS NOT NULL AND p.patient_key_id IS NOT NULL
  ON CONFLICT (resource_id) DO NOTHING`;
const LINK_KEYED = keyedStatement(LINK_KEYED_SQL).many;

/** LINK_KEYED, and the patients of the same studies that have no key yet. */
const LINK_KEYED_LIST_UNKEYED = keyedStatement(`WITH linked AS (${LINK_KEYED_SQL})
  SELECT p.id FROM studies st JOIN patients p ON p.id = st.patient_pk
  WHERE st.id {keys} AND p.patient_key_id IS NULL`);
