/**
 * QIDO-RS for researchers (PS3.18 10.6 over PS3.15 Annex E): match keys are read as the
 * researcher sees the data (de-identified UIDs, PatientKey for PatientID/PatientName, shifted
 * dates), keys on attributes the profile removes or replaces are refused (400) so that hidden
 * values cannot be probed, withheld instances are left out and not counted, and every result
 * is de-identified with its study's context.
 */
import { findPatientPksInProjects, findQidoInstanceUids, findQidoRows, findStudyInstanceUids, type QidoCondition, type QidoMatch, type QidoRow } from '../db/qido-search';
import { normalizePersonName } from '../db/normalize';
import type { DicomJson, DicomJsonElement } from '../dicom/types';
import { HttpError } from '../http/errors';
import type { DeidContext, DeidOptions } from '../privacy/privacy-types';
import { relativeBulkDataOnly, withheldWarning, type DeidView } from './deid-view';
import { findMatchKeyByColumn, type MatchKey } from './query-keys';
import { buildResult } from './query-results';
import type { PreparedSearch, SearchResponse, SearchServices } from './qido-rs';

/** Instances an instance-level search may match before withheld ones can no longer be left out exactly. */
const MAX_MATCHED_INSTANCES = 200_000;
const UID_COLUMNS = new Set(['study_uid', 'series_uid', 'sop_instance_uid']);
const PATIENT_TAGS = new Set(['00100010', '00100020']);
/** Matches no row: a UID that no index row can hold. */
const NO_UID = '-';

/** Runs a prepared search for a researcher: keys translated, withheld instances left out, results de-identified. */
export async function searchDeidentified(
  services: SearchServices,
  prepared: PreparedSearch,
  baseUrl: string,
  view: DeidView,
  moreWarning: (offset: number) => string,
): Promise<SearchResponse> {
  const { search, plan, query } = prepared;
  const knex = services.db.knex;
  const conditions = await translateConditions(view, search.conditions);
  const spec = { ...search, conditions };
  const warnings = [...query.warnings];
  let withheldCount = 0;
  if (spec.level === 'instance') {
    const matched = await findQidoInstanceUids(knex, spec, MAX_MATCHED_INSTANCES);
    if (matched.length >= MAX_MATCHED_INSTANCES) {
      throw new HttpError(400, `the search matches more than ${MAX_MATCHED_INSTANCES} instances; narrow it (e.g. by study) to search instances as a researcher`);
    }
    const withheld = await view.withheld(matched);
    spec.excludeInstances = [...withheld];
    withheldCount = withheld.size;
  }
  const found = await findQidoRows(knex, spec);
  const studyUids = [...new Set(found.rows.map((r) => r.study_uid))];
  const [contexts, visible] = await Promise.all([view.contexts(studyUids), visibleCounts(view, studyUids)]);
  if (spec.level !== 'instance') {
    const seen = new Set<string>();
    for (const row of found.rows) {
      const key = spec.level === 'study' ? row.study_uid : `${row.study_uid}|${row.series_uid}`;
      if (seen.has(key)) continue;
      seen.add(key);
      withheldCount += spec.level === 'study' ? (visible.withheldByStudy.get(row.study_uid) ?? 0) : (visible.withheldBySeries.get(row.series_uid ?? '') ?? 0);
    }
  }
  if (withheldCount > 0) warnings.push(withheldWarning(withheldCount));
  if (found.more && query.serverLimited) warnings.push(moreWarning(query.offset + found.rows.length));
  const body: DicomJson[] = [];
  for (const row of found.rows) {
    const ctx = contexts.get(row.study_uid);
    if (!ctx) continue; // not linked to one of the token's projects: never shown
    body.push(buildResult(deidentifyRow(view, row, ctx, visible), plan, baseUrl));
  }
  return { status: 200, body, warnings };
}

/** Visible (not withheld) counts of the studies of a page, and how many were withheld. */
interface VisibleCounts {
  studyInstances: Map<string, number>;
  studySeries: Map<string, number>;
  seriesInstances: Map<string, number>;
  withheldByStudy: Map<string, number>;
  withheldBySeries: Map<string, number>;
  /** ModalitiesInStudy and SOPClassesInStudy of the visible instances (a withheld modality is not named). */
  modalities: Map<string, Set<string>>;
  sopClasses: Map<string, Set<string>>;
}

async function visibleCounts(view: DeidView, studyUids: string[]): Promise<VisibleCounts> {
  const all = await findStudyInstanceUids(view.db.knex, studyUids);
  const withheld = await view.withheld(all.map((r) => r.sop_instance_uid));
  const out: VisibleCounts = {
    studyInstances: new Map(),
    studySeries: new Map(),
    seriesInstances: new Map(),
    withheldByStudy: new Map(),
    withheldBySeries: new Map(),
    modalities: new Map(),
    sopClasses: new Map(),
  };
  const add = (m: Map<string, Set<string>>, k: string, v: string | null) => {
    if (!m.has(k)) m.set(k, new Set());
    if (v) m.get(k)!.add(v);
  };
  const seriesSeen = new Set<string>();
  const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
  for (const r of all) {
    if (withheld.has(r.sop_instance_uid)) {
      bump(out.withheldByStudy, r.study_uid);
      bump(out.withheldBySeries, r.series_uid);
      continue;
    }
    bump(out.studyInstances, r.study_uid);
    bump(out.seriesInstances, r.series_uid);
    add(out.modalities, r.study_uid, r.modality);
    add(out.sopClasses, r.study_uid, r.sop_class_uid);
    if (!seriesSeen.has(r.series_uid)) {
      seriesSeen.add(r.series_uid);
      bump(out.studySeries, r.study_uid);
    }
  }
  return out;
}

/** A result row as the researcher sees it: de-identified UIDs (so RetrieveURLs use them), datasets and visible counts. */
function deidentifyRow(view: DeidView, row: QidoRow, ctx: DeidContext, visible: VisibleCounts): QidoRow {
  const someWithheld = (visible.withheldByStudy.get(row.study_uid) ?? 0) > 0;
  const deid = (ds: Record<string, unknown> | undefined) => (ds ? (view.engine.deidentifyJson(ds as DicomJson, ctx, relativeBulkDataOnly) as Record<string, unknown>) : undefined);
  return {
    ...row,
    study_uid: ctx.mapUid(row.study_uid),
    series_uid: row.series_uid === undefined ? undefined : ctx.mapUid(row.series_uid),
    sop_instance_uid: row.sop_instance_uid === undefined ? undefined : ctx.mapUid(row.sop_instance_uid),
    modalities: someWithheld ? [...(visible.modalities.get(row.study_uid) ?? [])].sort() : row.modalities,
    sop_classes: someWithheld ? [...(visible.sopClasses.get(row.study_uid) ?? [])].sort() : row.sop_classes,
    study_num_instances: visible.studyInstances.get(row.study_uid) ?? 0,
    study_num_series: visible.studySeries.get(row.study_uid) ?? 0,
    series_num_instances: row.series_uid === undefined ? undefined : (visible.seriesInstances.get(row.series_uid) ?? 0),
    study_dataset: deid(row.study_dataset),
    series_dataset: deid(row.series_dataset),
    instance_dataset: deid(row.instance_dataset),
  };
}

// ---------------------------------------------------------------- match keys

/**
 * Match keys as a researcher means them: UIDs are de-identified ones (resolved; unknown ones
 * match nothing), PatientID / PatientName match the PatientKey, dates match the shifted dates;
 * any other key is allowed only when de-identification leaves its attribute unchanged.
 */
async function translateConditions(view: DeidView, conditions: QidoCondition[]): Promise<QidoCondition[]> {
  const out: QidoCondition[] = [];
  let patients: Promise<PatientCandidates> | null = null;
  const candidates = () => (patients ??= loadCandidates(view));
  let options: Promise<DeidOptions[]> | null = null;
  const allOptions = () => (options ??= view.projectOptions().then((m) => [...m.values()]));
  for (const c of conditions) {
    if (UID_COLUMNS.has(c.column.column)) {
      out.push(await translateUids(view, c));
      continue;
    }
    const key = findMatchKeyByColumn(c.column.level, c.column.column);
    if (!key) throw new HttpError(400, `match key on ${c.column.column} is not available to researchers`);
    if (PATIENT_TAGS.has(key.tag)) {
      const { pks, pseudonyms } = await candidates();
      const matched = pks.filter((pk) => {
        const patientKey = pseudonyms.get(pk);
        return patientKey !== undefined && c.anyOf.some((m) => matchesPatientKey(key, patientKey, m));
      });
      out.push({ column: { level: 'study', column: 'patient_pk', kind: 'integer' }, anyOf: matched.length > 0 ? matched.map((pk) => ({ type: 'equal', value: pk })) : [{ type: 'equal', value: -1 }] });
      continue;
    }
    const handling = await probeKey(view, key, await allOptions());
    if (handling === 'kept') {
      out.push(c);
      continue;
    }
    if (handling === 'shifted') {
      const { pks, offsets } = await candidates();
      const withOffsets = pks.filter((pk) => offsets.has(pk));
      out.push({ ...c, shift: { patientPks: withOffsets, days: withOffsets.map((pk) => offsets.get(pk)!) } });
      continue;
    }
    throw new HttpError(
      400,
      `${key.keyword} cannot be used as a match key by researchers: de-identification (PS3.15 Annex E) removes or replaces that attribute`,
    );
  }
  return out;
}

async function translateUids(view: DeidView, c: QidoCondition): Promise<QidoCondition> {
  const values = c.anyOf.map((m) => (m.type === 'equal' ? String(m.value) : null));
  if (values.some((v) => v === null)) throw new HttpError(400, 'UID match keys take UID values only');
  const resolved = await view.resolveUids(values as string[]);
  const originals = (values as string[]).map((v) => resolved.get(v)).filter((v): v is string => v !== undefined);
  return { column: c.column, anyOf: (originals.length > 0 ? originals : [NO_UID]).map((value) => ({ type: 'equal', value }) as QidoMatch) };
}

interface PatientCandidates {
  pks: number[];
  pseudonyms: Map<number, string>;
  offsets: Map<number, number>;
}

/** Every patient of the token's projects with its PatientKey and date offset (one look-up each). */
async function loadCandidates(view: DeidView): Promise<PatientCandidates> {
  const pks = await findPatientPksInProjects(view.db.knex, view.projects === 'all' ? 'all' : await view.tokenProjects());
  const found = await view.pseudonymsOf(pks);
  const pseudonyms = new Map<number, string>();
  const offsets = new Map<number, number>();
  for (const [pk, p] of found) {
    pseudonyms.set(pk, p.patientKey);
    offsets.set(pk, p.dateOffsetDays);
  }
  return { pks, pseudonyms, offsets };
}

/** Whether a PatientKey satisfies one match of a PatientID (text) or PatientName (person name) key. */
export function matchesPatientKey(key: MatchKey, patientKey: string, m: QidoMatch): boolean {
  const value = key.column.kind === 'person-name' ? (normalizePersonName(patientKey) ?? '') : patientKey;
  const compared = key.column.kind === 'text-lower' ? value.toLowerCase() : value;
  switch (m.type) {
    case 'equal':
      return compared === String(m.value);
    case 'wildcard':
      return likeToRegExp(m.pattern).test(compared);
    case 'words': {
      const words = compared.split(/[^\p{L}\p{N}]+/u).filter((w) => w !== '');
      return m.words.every((w) => words.some((x) => x.startsWith(w)));
    }
    default:
      return false;
  }
}

/** A LIKE pattern (`%`, `_`, `\` escapes; PS3.4 C.2.2.2.4 wildcards) as an anchored regular expression. */
function likeToRegExp(pattern: string): RegExp {
  let out = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '\\' && i + 1 < pattern.length) out += escapeRegExp(pattern[++i]);
    else if (c === '%') out += '.*';
    else if (c === '_') out += '.';
    else out += escapeRegExp(c);
  }
  return new RegExp(`^${out}$`, 's');
}

function escapeRegExp(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// ---------------------------------------------------------------- what de-identification does to a key

type KeyHandling = 'kept' | 'shifted' | 'hidden';
const PROBE_OFFSET = 10;
const SAMPLES: Record<string, string> = { DA: '20000115', DT: '20000115101010', TM: '101010', IS: '7', UI: '1.2.3.4', CS: 'PROBE', PN: 'PROBE' };
const probeCache = new Map<string, KeyHandling>();

/**
 * What the engine does to a key's attribute under every one of the token's projects' options,
 * found by de-identifying a one-attribute sample: unchanged (match as stored), dates moved by
 * the patient's offset (match shifted), or anything else (removed, emptied, replaced: refused).
 */
async function probeKey(view: DeidView, key: MatchKey, options: DeidOptions[]): Promise<KeyHandling> {
  let result: KeyHandling | null = null;
  for (const opts of options.length > 0 ? options : []) {
    const cacheKey = `${key.tag}|${JSON.stringify(opts)}`;
    let h = probeCache.get(cacheKey);
    if (!h) {
      h = probeOnce(view, key, opts);
      if (probeCache.size < 10_000) probeCache.set(cacheKey, h);
    }
    if (result === null) result = h;
    else if (result !== h) return 'hidden';
  }
  return result ?? 'hidden';
}

function probeOnce(view: DeidView, key: MatchKey, options: DeidOptions): KeyHandling {
  const path = key.tag.split('.');
  const sample = SAMPLES[key.vr] ?? 'PROBE';
  const leaf: DicomJsonElement = { vr: key.vr, Value: [sample] };
  let dataset: DicomJson = { [path[path.length - 1]]: leaf };
  for (let i = path.length - 2; i >= 0; i--) dataset = { [path[i]]: { vr: 'SQ', Value: [dataset] } };
  const ctx: DeidContext = { projectId: 'probe', options, patient: { patientKey: 'PROBE', dateOffsetDays: PROBE_OFFSET }, mapUid: (u) => `2.25.${u.length}` };
  let out: DicomJson;
  try {
    out = view.engine.deidentifyJson(dataset, ctx, (uri) => uri);
  } catch {
    return 'hidden';
  }
  let element: DicomJsonElement | undefined = out[path[0]];
  for (let i = 1; i < path.length && element; i++) element = (element.Value?.[0] as DicomJson | undefined)?.[path[i]];
  const value = element?.Value?.[0];
  if (typeof value !== 'string' && typeof value !== 'number') return 'hidden';
  if (String(value) === sample) return 'kept';
  if ((key.vr === 'DA' || key.vr === 'DT') && String(value) === shiftSample(sample, PROBE_OFFSET)) return 'shifted';
  return 'hidden';
}

function shiftSample(sample: string, days: number): string {
  const d = new Date(Date.UTC(Number(sample.slice(0, 4)), Number(sample.slice(4, 6)) - 1, Number(sample.slice(6, 8)) + days));
  const ymd = `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, '0')}${String(d.getUTCDate()).padStart(2, '0')}`;
  return ymd + sample.slice(8);
}
