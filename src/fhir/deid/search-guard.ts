import type { Knex } from 'knex';
import type { Resource } from '@medplum/fhirtypes';
import type { PrivacyService } from '../../privacy/privacy-types';
import type { FhirDefinitions, SearchParamDef } from '../definitions';
import { fhirError } from '../outcome';
import { parseDateRange, type DateRange } from '../search/date-range';
import { parseFilter, type SearchFilter, type SearchRequest } from '../search/search-request';
import { parseDateValue, parseTokenValue, type Prefix } from '../search/search-values';
import type { PreparedSearch, SearchView } from '../search/search-view';
import { accessSql, type AccessFilter } from '../store/access';
import { extractIndexRows } from '../store/index-rows';
import { queryRows } from '../store/raw';
import type { StoredResource } from '../store/resource-store';
import { DICOM_UID_SYSTEM, PATIENT_KEY_SYSTEM } from './resource-masker';

/**
 * Searches of a de-identified caller (FHIR R4 search 3.1.1 on the resource as served):
 * - parameters over removed elements (names, addresses, telecom, free text, identifiers of other
 *   systems, `:text`, `:identifier`) are refused with 400: they would let a researcher probe PHI;
 * - `identifier=urn:imaging-lake:patient-key|PK` finds a Patient by its PatientKey, chained too
 *   (`subject:Patient.identifier=...`); `identifier=urn:dicom:uid|urn:oid:<de-identified UID>`
 *   and `series=<de-identified UID>` find an ImagingStudy by the UIDs the caller sees (never by
 *   the stored ones);
 * - date parameters (and _lastUpdated) match the SHIFTED values: SQL runs with the range widened
 *   by the largest offset (or without it), and the candidates are filtered exactly on their
 *   de-identified view, then paged (search-service findPostFiltered). A date inside a chain, and
 *   `_sort` on dates or removed elements, cannot be done that way and are refused with 400.
 */
export interface DeidSearchDeps {
  defs: FhirDefinitions;
  privacy?: PrivacyService;
  projects: readonly string[] | 'all';
  now: () => Date;
  maxOffsetDays?: number;
  deidentify(resources: readonly Resource[]): Promise<Resource[]>;
}

/** Patients scanned to find PatientKeys; a larger visible population is refused (too costly). */
const PATIENT_SCAN_LIMIT = 100_000;
const DAY_MS = 86_400_000;
/** A value `_id` never has (ids are [A-Za-z0-9-.]): matches nothing. */
const NO_ID = '!none';

/** The search view of a de-identified caller. */
export function createDeidSearchView(deps: DeidSearchDeps): SearchView {
  return { prepare: (db, req, access) => prepareSearch(deps, db, req, access) };
}

const refuse = (name: string, why: string) =>
  fhirError(400, 'not-supported', `Search parameter ${name} is not available in the de-identified view: ${why}`, [name]);

type ParamKind = 'identifier' | 'personal' | 'other';

/** What a token or sort parameter looks at: identifiers, personal details (names, telecom, addresses), or anything else. */
function paramKind(param: SearchParamDef): ParamKind {
  const types = param.simple?.map((p) => p.type);
  if (types) {
    if (types.some((t) => t === 'HumanName' || t === 'ContactPoint' || t === 'Address')) return 'personal';
    if (types.some((t) => t === 'Identifier')) return 'identifier';
    return 'other';
  }
  const e = param.expression ?? '';
  if (/\.(name|telecom|address)\b/.test(e)) return 'personal';
  if (/\.identifier\b/.test(e)) return 'identifier';
  return 'other';
}

async function prepareSearch(deps: DeidSearchDeps, db: Knex | Knex.Transaction, req: SearchRequest, access?: AccessFilter): Promise<PreparedSearch> {
  for (const s of req.sort) {
    if (s.code === '_lastUpdated' || s.param.type === 'date') throw refuse(`_sort=${s.code}`, 'dates are shifted per patient, so their stored order is not the order you see');
    if (s.param.type === 'string' || paramKind(s.param) !== 'other') throw refuse(`_sort=${s.code}`, 'it sorts on elements removed from your view');
  }
  const kept: SearchFilter[] = [];
  const dates: SearchFilter[] = [];
  for (const f of req.filters) {
    const isDate = f.code === '_lastUpdated' || f.param.type === 'date';
    if (isDate && f.modifier !== 'missing') dates.push(f);
    else kept.push(await rewriteFilter(deps, db, access, req.resourceType, f, ''));
  }
  if (dates.length === 0) return { request: { ...req, filters: kept } };
  const widened = deps.maxOffsetDays === undefined ? [] : dates.flatMap((f) => widenDateFilter(deps, req.resourceType, f));
  return {
    request: { ...req, filters: [...kept, ...widened] },
    postFilter: async (_db, candidates) => {
      const masked = await deps.deidentify(candidates.map((c) => c.content as Resource));
      const now = deps.now().getTime();
      return candidates.filter((_c, i) => dates.every((f) => matchesDates(deps.defs, masked[i], f, now)));
    },
  };
}

/** Checks one filter (and the filters of its chain) and rewrites what the view maps (PatientKey, de-identified UIDs). */
async function rewriteFilter(
  deps: DeidSearchDeps,
  db: Knex | Knex.Transaction,
  access: AccessFilter | undefined,
  resourceType: string,
  f: SearchFilter,
  prefix: string,
): Promise<SearchFilter> {
  if (f.code === '_id') return f;
  if (f.chain) {
    const chain = [];
    for (const c of f.chain) chain.push({ targetType: c.targetType, filter: await rewriteFilter(deps, db, access, c.targetType, c.filter, `${prefix}${f.code}:${c.targetType}.`) });
    return { ...f, chain };
  }
  const name = `${prefix}${f.code}`;
  if (f.code === '_lastUpdated' || f.param.type === 'date') {
    if (f.modifier === 'missing') return f;
    throw refuse(name, 'a date inside a chain cannot be matched on shifted values; search the target type first');
  }
  if (f.param.type === 'string' && !(resourceType === 'Group' && f.code === 'name')) throw refuse(name, 'it searches text (names, addresses, descriptions) removed from your view');
  if (f.param.type === 'reference' && f.modifier === 'identifier') throw refuse(name, 'identifiers are removed from your view');
  if (f.param.type !== 'token') return f;
  if (f.modifier === 'text') throw refuse(name, 'the :text modifier searches free text removed from your view');
  if (resourceType === 'ImagingStudy' && f.code === 'series') return rewriteSeriesUids(deps, db, f, name);
  const kind = paramKind(f.param);
  if (kind === 'personal') throw refuse(name, 'it searches personal details (names, telecom, addresses) removed from your view');
  if (kind === 'identifier') return rewriteIdentifier(deps, db, access, resourceType, f, name);
  return f;
}

async function rewriteIdentifier(
  deps: DeidSearchDeps,
  db: Knex | Knex.Transaction,
  access: AccessFilter | undefined,
  resourceType: string,
  f: SearchFilter,
  name: string,
): Promise<SearchFilter> {
  if (f.modifier !== undefined) throw refuse(`${name}:${f.modifier}`, 'identifiers are removed from your view');
  const tokens = f.values.map(parseTokenValue);
  const all = (system: string) => tokens.every((t) => t.system === system && typeof t.code === 'string' && t.code !== '');
  if (resourceType === 'Patient' && f.code === 'identifier' && all(PATIENT_KEY_SYSTEM)) {
    const ids = await patientsByKeys(deps, db, access, tokens.map((t) => t.code as string));
    return parseFilter(deps.defs, 'Patient', '_id', ids.length ? ids.join(',') : NO_ID);
  }
  if (resourceType === 'ImagingStudy' && f.code === 'identifier' && all(DICOM_UID_SYSTEM)) {
    const shown = tokens.map((t) => (t.code as string).replace(/^urn:oid:/, ''));
    const resolved = deps.privacy && deps.projects !== 'all' ? await deps.privacy.resolveDeidUids(db, deps.projects, shown) : new Map();
    const originals = shown.map((u) => resolved.get(u)?.uid).filter((u): u is string => !!u);
    // A UID the caller does not see (an original one, or unknown) matches nothing.
    const values = originals.length ? originals.map((u) => `${DICOM_UID_SYSTEM}|urn:oid:${u}`) : [`${DICOM_UID_SYSTEM}|urn:oid:0`];
    return { ...f, values };
  }
  throw refuse(name, `identifiers are removed from your view; search Patient by ${PATIENT_KEY_SYSTEM}|<PatientKey>${resourceType === 'ImagingStudy' ? ` or ImagingStudy by ${DICOM_UID_SYSTEM}|urn:oid:<UID as you see it>` : ''}`);
}

/** ImagingStudy `series` (Series Instance UID): the UIDs the caller sees, resolved to the stored ones; others match nothing. */
async function rewriteSeriesUids(deps: DeidSearchDeps, db: Knex | Knex.Transaction, f: SearchFilter, name: string): Promise<SearchFilter> {
  if (f.modifier !== undefined && f.modifier !== 'missing') throw refuse(`${name}:${f.modifier}`, 'series UIDs are matched exactly, as you see them');
  if (f.modifier === 'missing') return f;
  const shown = f.values.map((v) => parseTokenValue(v).code ?? '').filter(Boolean);
  const resolved = deps.privacy && deps.projects !== 'all' && shown.length ? await deps.privacy.resolveDeidUids(db, deps.projects, shown) : new Map();
  const originals = shown.map((u) => resolved.get(u)?.uid).filter((u): u is string => !!u);
  return { ...f, values: originals.length ? originals : ['0'] };
}

/** Ids of the visible Patients whose PatientKey is one of `keys`. */
async function patientsByKeys(deps: DeidSearchDeps, db: Knex | Knex.Transaction, access: AccessFilter | undefined, keys: string[]): Promise<string[]> {
  if (!deps.privacy) return [];
  const a = accessSql(access, 'r');
  // Keys already linked to Patients (every key a caller has seen is): two index lookups.
  const linked = await queryRows(
    db,
    `SELECT r.id FROM fhir_resource r
      WHERE r.resource_type = 'Patient' AND NOT r.deleted AND ${a.sql}
        AND r.id IN (SELECT fk.resource_id FROM fhir_patient_keys fk JOIN patient_keys k ON k.id = fk.patient_key_id WHERE k.patient_key = ANY(?::text[])
                     UNION SELECT p.fhir_id FROM patients p JOIN patient_keys k ON k.id = p.patient_key_id WHERE k.patient_key = ANY(?::text[]) AND p.fhir_id IS NOT NULL)`,
    [...a.bindings, keys, keys],
  );
  if (linked.length > 0) return linked.map((r) => String(r.id));
  const rows = await queryRows(
    db,
    `SELECT r.id FROM fhir_resource r WHERE r.resource_type = 'Patient' AND NOT r.deleted AND ${a.sql} ORDER BY r.rid LIMIT ?`,
    [...a.bindings, PATIENT_SCAN_LIMIT + 1],
  );
  if (rows.length > PATIENT_SCAN_LIMIT) throw fhirError(400, 'too-costly', `PatientKey search scans the Patients you may see, and there are more than ${PATIENT_SCAN_LIMIT}`);
  const wanted = new Set(keys);
  const out: string[] = [];
  const ids = rows.map((r) => String(r.id));
  for (let i = 0; i < ids.length; i += 5000) {
    const chunk = ids.slice(i, i + 5000);
    const pseudonyms = await deps.privacy.pseudonymsForFhirPatients(db, chunk);
    for (const id of chunk) if (wanted.has(pseudonyms.get(id)?.patientKey ?? '')) out.push(id);
  }
  return out;
}

/**
 * A superset of a date filter over STORED values: each shifted value lies within the largest
 * offset (plus a year, for values of year precision) of its stored one. Multi-valued (OR)
 * filters and `ne` are not widened but left to the exact filter alone.
 */
function widenDateFilter(deps: DeidSearchDeps, resourceType: string, f: SearchFilter): SearchFilter[] {
  if (f.values.length !== 1) return [];
  const { prefix, range } = parseDateValue(f.values[0], f.code);
  const w = ((deps.maxOffsetDays ?? 0) + 367) * DAY_MS;
  let { low, high } = range;
  if (prefix === 'ap') {
    const spread = Math.max(Math.abs(deps.now().getTime() - low) * 0.1, DAY_MS);
    low -= spread;
    high += spread;
  }
  const bounds: Array<[Prefix, number]> = {
    eq: [['ge', low - w], ['le', high + w]],
    ap: [['ge', low - w], ['le', high + w]],
    ne: [],
    gt: [['gt', high - w]],
    lt: [['lt', low + w]],
    ge: [['ge', low - w]],
    le: [['le', high + w]],
    sa: [['sa', high - w]],
    eb: [['eb', low + w]],
  }[prefix] as Array<[Prefix, number]>;
  const out: SearchFilter[] = [];
  for (const [p, ms] of bounds) {
    const d = new Date(ms);
    if (!Number.isFinite(ms) || d.getUTCFullYear() < 1 || d.getUTCFullYear() > 9999) continue;
    out.push(parseFilter(deps.defs, resourceType, f.code, `${p}${d.toISOString()}`));
  }
  return out;
}

/** True when the de-identified resource matches the date filter (the same semantics as search-sql rangeSql). */
function matchesDates(defs: FhirDefinitions, resource: Resource, f: SearchFilter, now: number): boolean {
  const rows = dateRowsOf(defs, resource, f.code);
  return f.values.some((raw) => {
    const { prefix, range } = parseDateValue(raw, f.code);
    return rows.some((row) => compare(prefix, range, row, now));
  });
}

function dateRowsOf(defs: FhirDefinitions, resource: Resource, code: string): DateRange[] {
  if (code === '_lastUpdated') {
    const r = resource.meta?.lastUpdated ? parseDateRange(resource.meta.lastUpdated) : undefined;
    return r ? [{ low: r.low, high: r.low + 1 }] : [];
  }
  const parse = (t: string) => (t === '-infinity' ? Number.NEGATIVE_INFINITY : t === 'infinity' ? Number.POSITIVE_INFINITY : Date.parse(t));
  try {
    return extractIndexRows(defs, resource)
      .date.filter((d) => d.param === code)
      .map((d) => ({ low: parse(d.low), high: parse(d.high) }));
  } catch {
    return [];
  }
}

function compare(prefix: Prefix, q: DateRange, v: DateRange, now: number): boolean {
  switch (prefix) {
    case 'eq':
      return v.low >= q.low && v.low < q.high && v.high <= q.high;
    case 'ne':
      return v.low < q.low || v.high > q.high;
    case 'gt':
      return v.high > q.high;
    case 'lt':
      return v.low < q.low;
    case 'ge':
      return v.high > q.low;
    case 'le':
      return v.low < q.high;
    case 'sa':
      return v.low >= q.high;
    case 'eb':
      return v.high <= q.low;
    case 'ap': {
      const spread = Math.max(Math.abs(now - q.low) * 0.1, DAY_MS);
      return v.low < q.high + spread && v.high > q.low - spread;
    }
  }
}
