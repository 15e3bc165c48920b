/**
 * QIDO-RS searches as SQL (PS3.18 10.6): one query per request over studies, series and
 * instances, every match key on an indexed column, relational matching across levels
 * (PS3.4 C.4.1.2.1), paging in a unique indexed order, and only the requested attributes
 * cut out of the JSONB datasets (blobs are never read).
 */
import type { Knex } from 'knex';
import { preparedRaw } from './prepared-statement';
import { applyStudyRestriction, type StudyRestriction } from './wado-index';

export type QidoLevel = 'study' | 'series' | 'instance';

/** How a column is compared (see dicomweb/query-keys.json). */
export type ColumnKind = 'text' | 'text-lower' | 'person-name' | 'date' | 'time' | 'datetime' | 'integer' | 'text-array';

/** An indexed column of one level's table. */
export interface QidoColumn {
  level: QidoLevel;
  column: string;
  kind: ColumnKind;
  /** tsvector column with the words of a person name, for fuzzy matching. */
  words?: string;
}

/** One way a value can match; the values of a condition are OR-ed (PS3.4 C.2.2.2.1 list matching). */
export type QidoMatch =
  | { type: 'equal'; value: string | number }
  /** A LIKE pattern with `%`, `_` and `\` already escaped (PS3.4 C.2.2.2.4). */
  | { type: 'wildcard'; pattern: string }
  /** Inclusive range; either end may be open (PS3.4 C.2.2.2.5). Dates are YYYY-MM-DD, times and datetimes DICOM strings. */
  | { type: 'range'; from?: string; to?: string }
  /** Every word must be the prefix of some word of the name (fuzzy matching, PS3.4 C.2.2.2.1). */
  | { type: 'words'; words: string[] };

/** A match key: the column and its values (OR-ed). Conditions are AND-ed. */
export interface QidoCondition {
  column: QidoColumn;
  anyOf: QidoMatch[];
  /**
   * Match the value a researcher sees: each patient's dates moved by its offset (days), given as
   * parallel arrays of patients.id and offsets. Only for date and datetime columns.
   */
  shift?: DateShift;
}

/** Per-patient date offsets (PS3.15 E.3.6 modified dates): `patientPks[i]` is shown `days[i]` days later. */
export interface DateShift {
  patientPks: number[];
  days: number[];
}

/** Which JSONB keys to cut out of each level's dataset: a list, or 'all'. */
export type DatasetSelection = string[] | 'all';

/** A whole search, transport-neutral. */
export interface QidoSearch {
  level: QidoLevel;
  /** Which resource the request targets: all, one study's, or one series' children. */
  scope: 'all' | 'study' | 'series';
  conditions: QidoCondition[];
  limit: number;
  offset: number;
  datasets: Partial<Record<QidoLevel, DatasetSelection>>;
  /**
   * Narrows the studies a caller may see (row-level security). Called with a builder over the
   * unaliased `studies` table; it is applied at every level as `studies.id IN (...)`.
   */
  restrictStudies?: StudyRestriction;
  /** SOP Instance UIDs left out of the answer (withheld from a researcher); counted as absent. */
  excludeInstances?: string[];
}

/** One result row: keys, aggregates and the selected dataset subsets. */
export interface QidoRow {
  study_uid: string;
  study_num_series: number;
  study_num_instances: number;
  modalities: string[];
  sop_classes: string[];
  series_uid?: string;
  series_num_instances?: number;
  sop_instance_uid?: string;
  study_dataset?: Record<string, unknown>;
  series_dataset?: Record<string, unknown>;
  instance_dataset?: Record<string, unknown>;
}

const ALIAS: Record<QidoLevel, string> = { study: 'st', series: 'se', instance: 'i' };
const TABLE: Record<QidoLevel, string> = { study: 'studies', series: 'series', instance: 'instances' };
const DEPTH: Record<QidoLevel, number> = { study: 0, series: 1, instance: 2 };

/** Runs a search; fetches one row more than the limit to tell whether more results exist. */
export async function findQidoRows(knex: Knex, search: QidoSearch): Promise<{ rows: QidoRow[]; more: boolean }> {
  const raw = (await buildQidoQuery(knex, search)) as Array<Record<string, unknown>>;
  const rows = raw.map(flattenRow);
  const more = rows.length > search.limit;
  return { rows: more ? rows.slice(0, search.limit) : rows, more };
}

/** Merges the packed parent rows into one flat result row. */
function flattenRow(raw: Record<string, unknown>): QidoRow {
  const { study_row: study, series_row: series, ...own } = raw;
  return { ...(own as object), ...(study as object | undefined), ...(series as object | undefined) } as QidoRow;
}

/**
 * The SQL of a search (exported so tests can EXPLAIN it): one query on the resource level's
 * table (parents joined only when their keys are matched), sorted and limited there; parent
 * rows and dataset subsets are correlated primary-key look-ups in the select list, which
 * PostgreSQL evaluates after the sort and limit, i.e. for the returned page only.
 */
export function buildQidoQuery(knex: Knex, search: QidoSearch): Knex.QueryBuilder {
  const q = buildMatching(knex, search);
  selectColumns(knex, q, search);
  orderRows(q, search);
  return q.limit(search.limit + 1).offset(search.offset);
}

/**
 * How the database writes each study result as DICOM JSON text (PS3.18 F.2) itself, so that
 * neither side parses or rebuilds the stored datasets row by row. jsonb output orders object
 * keys by length, then byte-wise: for 8-digit tags that is the ascending tag order F.2 asks for.
 */
export interface StudyJsonPlan {
  /** Zero-length elements (`{tag: {vr}}`) of every requested stored attribute; a stored value replaces its entry (PS3.4 C.2.2.1.2). */
  empty: Record<string, { vr: string }>;
  /** Keys of the study dataset to leave out, or null to keep them all (includefield=all). */
  dropKeys: string[] | null;
  /** Attributes computed from the study row (see STUDY_COMPUTED). */
  computed: string[];
  /** RetrieveURL prefix: the study UID is appended to it. */
  studiesUrl: string;
  /**
   * The plan is the default study attributes that `studies.qido_json` holds (migration
   * 20261123002000): rows are read from it, and RetrieveURL is left as STUDY_URL_PLACEHOLDER
   * for the caller to fill in.
   */
  written: boolean;
}

/** The default study attributes `studies.qido_json` holds, in order (migration 20261123002000). */
export const STUDY_DEFAULTS_TEXT_TAGS: readonly string[] = [
  '00080005', '00080020', '00080030', '00080050', '00080056', '00080061', '00080090', '00080201', '00081030',
  '00081190', '00100010', '00100020', '00100030', '00100040', '0020000D', '00200010', '00201206', '00201208',
];

/** RetrieveURL in `studies.qido_json`, to be replaced by the request's URL (its only occurrence: no default attribute is a sequence). */
export const STUDY_URL_PLACEHOLDER = '"00081190": {"vr": "UR"}';

/** One study result written by the database: the DICOM JSON object as text. */
export interface StudyJsonRow {
  study_uid: string;
  json: string;
}

/** SQL of the attributes the study row holds as typed columns (aggregates kept exact by the index writer). */
const STUDY_COMPUTED: Record<string, string> = {
  '00080056': `'{"vr": "CS", "Value": ["ONLINE"]}'::jsonb`,
  '00080061': `CASE WHEN cardinality(st.modalities) > 0 THEN jsonb_build_object('vr', 'CS', 'Value', to_jsonb(st.modalities)) ELSE '{"vr": "CS"}'::jsonb END`,
  '00080062': `CASE WHEN cardinality(st.sop_classes) > 0 THEN jsonb_build_object('vr', 'UI', 'Value', to_jsonb(st.sop_classes)) ELSE '{"vr": "UI"}'::jsonb END`,
  '00201206': `jsonb_build_object('vr', 'IS', 'Value', jsonb_build_array(st.num_series))`,
  '00201208': `jsonb_build_object('vr', 'IS', 'Value', jsonb_build_array(st.num_instances))`,
  '00081190': `jsonb_build_object('vr', 'UR', 'Value', jsonb_build_array(?::text || st.study_uid))`,
};

/** Whether the database can write a tag of a study result (a computed one). */
export function isStudyComputedTag(tag: string): boolean {
  return Object.prototype.hasOwnProperty.call(STUDY_COMPUTED, tag);
}

/** Runs a study-level search whose results the database writes as DICOM JSON text; one row more than the limit tells whether more exist. */
export async function findQidoStudyJson(knex: Knex, search: QidoSearch, plan: StudyJsonPlan): Promise<{ rows: StudyJsonRow[]; more: boolean }> {
  let found: Array<{ study_uid: string; json: string | null }>;
  if (isPreparedPage(search, plan) || isPreparedLookup(search, plan)) {
    // Through knex (node-postgres' callback API): queryPrepared's promise API was measured to
    // cost ~1.5 ms more per 820-row page in young-generation garbage collection.
    const { sql, bindings } = isPreparedPage(search, plan) ? datePageStatement(knex, search, 'texts') : buildQidoStudyJsonQuery(knex, search, plan).toSQL();
    found = (await preparedRaw(knex, sql, bindings)).rows as typeof found;
  } else {
    found = (await buildQidoStudyJsonQuery(knex, search, plan)) as typeof found;
  }
  const more = found.length > search.limit;
  if (more) found.length = search.limit;
  // Rows written before studies.qido_json existed hold NULL: their text is computed now, by UID.
  if (plan.written && found.some((r) => r.json === null)) return { rows: await fillOlderRows(knex, found, plan), more };
  return { rows: found as StudyJsonRow[], more };
}

async function fillOlderRows<Row extends { study_uid: string; json: string | null }>(knex: Knex, found: Row[], plan: StudyJsonPlan): Promise<Array<Row & StudyJsonRow>> {
  const missing = found.filter((r) => r.json === null).map((r) => r.study_uid);
  const [expression, bindings] = studyJsonExpression(plan);
  const filled = (await knex('studies as st').whereIn('st.study_uid', missing).select('st.study_uid', knex.raw(`${expression} AS json`, bindings))) as StudyJsonRow[];
  const byUid = new Map(filled.map((r) => [r.study_uid, r.json]));
  const rows: Array<Row & StudyJsonRow> = [];
  // A study deleted between the two reads is left out, as if the search had run after the delete.
  for (const r of found) {
    const json = r.json ?? byUid.get(r.study_uid);
    if (json !== undefined) rows.push({ ...r, json });
  }
  return rows;
}

/**
 * The SQL of a study-level search that returns DICOM JSON text (exported so tests can EXPLAIN
 * it): the same matching, order and paging as buildQidoQuery. For the default attributes it
 * reads `studies.qido_json` as stored (NULL on rows older than the column: findQidoStudyJson
 * fills those in by UID), so that the sorted rows carry that text only, not the dataset too;
 * otherwise one expression per row over the study row alone (its dataset and aggregates),
 * evaluated for the returned page only.
 */
export function buildQidoStudyJsonQuery(knex: Knex, search: QidoSearch, plan: StudyJsonPlan): Knex.QueryBuilder {
  if (search.level !== 'study') throw new Error('buildQidoStudyJsonQuery is for study-level searches');
  if (plan.written && byDateOnly(search)) return datePageQuery(knex, search);
  const q = buildMatching(knex, search);
  if (plan.written) {
    q.select('st.study_uid', 'st.qido_json as json');
  } else {
    const [expression, bindings] = studyJsonExpression(plan);
    q.select('st.study_uid', knex.raw(`${expression} AS json`, bindings));
  }
  orderRows(q, search);
  return q.limit(search.limit + 1).offset(search.offset);
}

/**
 * The predicate of the covering index studies_qido_page_idx (migration 20261125001000), word for
 * word: the planner uses a partial index only for a query that repeats its predicate.
 */
const PAGE_ROW_FITS = 'octet_length(st.qido_json) + octet_length(st.study_uid) + coalesce(octet_length(st.study_time), 0) <= 2400';

/**
 * Whether a study search is the study list by date with the default attributes (at most one
 * date or range, every study visible): its few SQL texts run as named prepared statements, so
 * that PostgreSQL plans each once per connection and keeps the generic plan (the two index
 * scans of datePageQuery, whatever the dates), instead of planning the union on every request
 * (measured at 1M instances: ~0.7 ms of backend CPU per 30-day page). A restricted search is
 * left to custom plans: which plan is best depends on how many studies the caller's projects hold.
 */
export function isPreparedPage(search: QidoSearch, plan: StudyJsonPlan): boolean {
  return plan.written && !search.restrictStudies && byDateOnly(search) && search.conditions.length <= 1 && search.conditions.every((c) => c.anyOf.length === 1);
}

/** Study keys whose one exact value names a handful of studies (a patient's, one study, one accession). */
const LOOKUP_COLUMNS = new Set(['patient_id', 'study_uid', 'accession_number']);

/**
 * Whether a study search with the default attributes looks studies up by an exact PatientID,
 * StudyInstanceUID or AccessionNumber (what a viewer's worklist sends): its SQL text depends only
 * on which keys are given and on the caller's restriction, so it runs as a named prepared
 * statement and PostgreSQL keeps one generic plan (an index probe, whatever the value) instead
 * of planning the search over the studies table's indexes on every request. A restricted one
 * probes each found study's project links (namesFewStudies), a plan that does not depend on how
 * many studies the projects hold.
 */
function isPreparedLookup(search: QidoSearch, plan: StudyJsonPlan): boolean {
  if (!plan.written || search.conditions.length === 0) return false;
  return search.conditions.every((c) => isLookup(c) && c.anyOf.length === 1);
}

/** An exact value (or UID list) of PatientID, StudyInstanceUID or AccessionNumber: no wildcard, not universal. */
function isLookup(c: QidoCondition): boolean {
  return c.column.level === 'study' && LOOKUP_COLUMNS.has(c.column.column) && !c.shift && c.anyOf.length > 0 && c.anyOf.every((v) => v.type === 'equal');
}

/**
 * Whether the search itself names a handful of studies (some exact look-up key): the project
 * row filter is then cheapest as a probe of each found study's links (restrictStudiesToProjects'
 * `fewStudies`), where any other search keeps the semi-join that starts from the projects.
 */
function namesFewStudies(search: QidoSearch): boolean {
  return search.conditions.some(isLookup);
}

/** A study search matched on the study date alone (or on nothing): its results come in the order studies_qido_page_idx holds. */
function byDateOnly(search: QidoSearch): boolean {
  return search.conditions.every((c) => c.column.level === 'study' && c.column.column === 'study_date' && !c.shift);
}

/**
 * Default study results by date as two index scans: the rows studies_qido_page_idx covers (their
 * text read from the index, in order, without a visit to each study's heap page) and the rare
 * rest (studies_qido_page_rest_idx), merged in the result order and paged there.
 */
export function datePageQuery(knex: Knex, search: QidoSearch, columns: 'texts' | 'keys' | 'versions' = 'texts'): Knex.QueryBuilder {
  const selected = { texts: ['study_uid', 'json'], keys: ['id', 'rev', 'study_date', 'study_time'], versions: ['id', 'rev', 'study_uid', 'json'] }[columns];
  const branch = (fits: boolean) => {
    const q = buildMatching(knex, search)
      .select(selected.filter((c) => !PAGE_ORDER_COLUMNS.includes(c)).map((c) => (c === 'json' ? 'st.qido_json as json' : `st.${c}`)))
      .select('st.study_date', 'st.study_time', 'st.id');
    q.whereRaw(fits ? PAGE_ROW_FITS : `NOT coalesce(${PAGE_ROW_FITS}, false)`);
    orderRows(q, search);
    return q.limit(search.offset + search.limit + 1);
  };
  return knex
    .select(selected.map((c) => `u.${c}`))
    .from(knex.unionAll([branch(true), branch(false)], true).as('u'))
    .orderByRaw(`${PAGE_ORDER.replaceAll('{t}', 'u')}`)
    .limit(search.limit + 1)
    .offset(search.offset);
}

/** The statements over a date page (datePageQuery): its texts, its keys as one text, its versions, and the versions of some ids. */
type DatePageStatement = 'texts' | 'keys' | 'versions' | 'textsOf';

/** The query of a date page statement; `extra` are the bindings that follow the page's own (textsOf: the ids). */
function datePageStatementQuery(knex: Knex, search: QidoSearch, statement: DatePageStatement, extra: readonly Knex.RawBinding[]): Knex.QueryBuilder {
  switch (statement) {
    case 'texts':
    case 'versions':
      return datePageQuery(knex, search, statement);
    case 'keys':
      return knex
        .select(knex.raw(`string_agg(k.id::text || ':' || k.rev::text, ',' ORDER BY ${PAGE_ORDER.replaceAll('{t}', 'k')}) AS keys`))
        .from(datePageQuery(knex, search, 'keys').as('k'));
    case 'textsOf':
      // See findQidoStudyPageTexts for why the ids are joined after the page's paging.
      return knex
        .select('p.id', 'p.rev', 'p.study_uid', 'p.json')
        .from(datePageQuery(knex, search, 'versions').as('p'))
        .join(knex.raw('unnest(?::bigint[]) AS wanted(id)', [extra[0]]), 'wanted.id', 'p.id');
  }
}

/** SQL texts of date page statements by the shape of their search (null: a shape whose bindings knex lays out otherwise). */
const datePageTexts = new Map<string, string | null>();

/**
 * The SQL text and bindings of a date page statement (isPreparedPage searches). Knex compiles
 * the text once per shape of search (which ends of the date given, an offset or not) and the
 * bindings are laid out here, as the first compilation of the shape is checked to lay them out:
 * compiling the union of datePageQuery on every request cost ~0.3 ms of node CPU per page
 * (knex's query compiler; profiled at 1M instances on 30-day pages).
 */
export function datePageStatement(knex: Knex, search: QidoSearch, statement: DatePageStatement, extra: readonly Knex.RawBinding[] = []): { sql: string; bindings: Knex.RawBinding[] } {
  const values: Knex.RawBinding[] = [];
  let shape = `${statement}:${search.offset > 0 ? 'o' : ''}`;
  for (const c of search.conditions) {
    for (const m of c.anyOf) {
      if (m.type === 'equal') {
        shape += ':e';
        values.push(m.value);
      } else if (m.type === 'range') {
        shape += `:r${m.from ? 'f' : ''}${m.to ? 't' : ''}`;
        if (m.from) values.push(m.from);
        if (m.to) values.push(m.to);
      } else {
        shape += `:${m.type}`;
      }
    }
    shape += ';';
  }
  // Each branch binds the conditions' values and its own limit, then the page its limit and offset (knex leaves out OFFSET 0).
  const branchLimit = search.offset + search.limit + 1;
  const bindings: Knex.RawBinding[] = [...values, branchLimit, ...values, branchLimit, search.limit + 1, ...(search.offset > 0 ? [search.offset] : []), ...extra];
  // Only a search whose text depends on nothing else has it kept (isPreparedPage's).
  const known = search.level === 'study' && !search.restrictStudies && byDateOnly(search) ? datePageTexts.get(shape) : null;
  if (known) return { sql: known, bindings };
  const compiled = datePageStatementQuery(knex, search, statement, extra).toSQL();
  if (known === undefined) {
    const same = compiled.bindings.length === bindings.length && compiled.bindings.every((b, i) => b === bindings[i]);
    datePageTexts.set(shape, same ? compiled.sql : null);
  }
  return { sql: compiled.sql, bindings: compiled.bindings as Knex.RawBinding[] };
}

/** The columns every branch of a date page selects for its order. */
const PAGE_ORDER_COLUMNS = ['study_date', 'study_time', 'id'];
/** The order of a date page over the rows `{t}` (orderRows' order for a study list by date). */
const PAGE_ORDER = '{t}.study_date DESC NULLS LAST, {t}.study_time DESC NULLS LAST, {t}.id DESC';

/** A study of a page and the revision of its result text (`studies.rev`, migration 20261127001000). */
export interface StudyPageKey {
  id: string;
  rev: string;
}

/** The studies of a date page in result order: `ids[i]` at revision `revs[i]` (both bigint columns, exact below 2^53). */
export interface StudyPageKeys {
  ids: number[];
  revs: number[];
}

/** One study's result text (`studies.qido_json`, or computed the same way where it is NULL) with its id and revision. */
export interface StudyJsonVersion extends StudyJsonRow {
  id: string;
  rev: string;
}

/**
 * The ids and revisions of the studies of a date page (isPreparedPage), in result order,
 * without their texts: the same two index scans as the page itself, read from
 * studies_qido_page_idx alone. One row more than the limit tells whether more exist.
 *
 * They come as one text (`id:rev,id:rev,...`, aggregated in the page's order), not as a row per
 * study: node-postgres makes a message, a field array, two strings and a row object of each
 * row, some 1,000 objects per 100 studies, which was ~45% of all the memory a warm 30-day page
 * of 820 studies allocated (sampled at 1M instances), and so of its young-generation collections.
 */
export async function findQidoStudyPageKeys(knex: Knex, search: QidoSearch): Promise<StudyPageKeys & { more: boolean }> {
  const { sql, bindings } = datePageStatement(knex, search, 'keys');
  const text = ((await preparedRaw(knex, sql, bindings)).rows as Array<{ keys: string | null }>)[0]?.keys ?? '';
  const keys = parseStudyPageKeys(text);
  const more = keys.ids.length > search.limit;
  if (more) {
    keys.ids.length = search.limit;
    keys.revs.length = search.limit;
  }
  return { ...keys, more };
}

/** Parses `id:rev,id:rev,...` (decimal digits only) without a string per number. */
export function parseStudyPageKeys(text: string): StudyPageKeys {
  const ids: number[] = [];
  const revs: number[] = [];
  let value = 0;
  let id = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      value = value * 10 + (c - 48);
    } else if (c === 58) {
      id = value;
      value = 0;
    } else if (c === 44) {
      ids.push(id);
      revs.push(value);
      value = 0;
    } else {
      throw new Error(`unexpected character ${JSON.stringify(text[i])} in the keys of a study page`);
    }
  }
  if (text.length > 0) {
    ids.push(id);
    revs.push(value);
  }
  return { ids, revs };
}

/**
 * The results of a date page (isPreparedPage) as findQidoStudyJson reads them, with each study's
 * id and revision; one row more than the limit tells whether more exist. Rows older than
 * `qido_json` (NULL) get the text computed as findQidoStudyJson computes it.
 */
export async function findQidoStudyPageVersions(knex: Knex, search: QidoSearch, plan: StudyJsonPlan): Promise<{ rows: StudyJsonVersion[]; more: boolean }> {
  const { sql, bindings } = datePageStatement(knex, search, 'versions');
  const found = (await preparedRaw(knex, sql, bindings)).rows as Array<StudyPageKey & { study_uid: string; json: string | null }>;
  const more = found.length > search.limit;
  if (more) found.length = search.limit;
  if (found.some((r) => r.json === null)) return { rows: await fillOlderRows(knex, found, plan), more };
  return { rows: found as StudyJsonVersion[], more };
}

/**
 * The texts of some studies of a date page (isPreparedPage) with their ids and revisions, in no
 * particular order: the page of findQidoStudyPageVersions, cut to the given ids after its paging.
 * The page is read from studies_qido_page_idx as the texts of the uncached path are (a text not
 * asked for is not decompressed), not by id, which would visit one heap page per study (measured
 * on a 30-day page of 820 studies at 1M instances: 62 buffers and 0.5 ms against 2,462 buffers
 * and 7 ms). A study deleted since, or moved out of the page, is missing; one changed since comes
 * with its new text and revision.
 */
export async function findQidoStudyPageTexts(knex: Knex, search: QidoSearch, plan: StudyJsonPlan, ids: readonly string[]): Promise<StudyJsonVersion[]> {
  if (ids.length === 0) return [];
  // The paging of the inner query keeps PostgreSQL from moving the id condition into its index
  // scans. A join on the ids is a hash join; `p.id = ANY(ids)` searched the array once per row
  // (measured with 700 of 820 ids: 2.1 against 0.6 ms).
  const { sql, bindings } = datePageStatement(knex, search, 'textsOf', [[...ids]]);
  const found = (await preparedRaw(knex, sql, bindings)).rows as Array<StudyPageKey & { study_uid: string; json: string | null }>;
  if (found.some((r) => r.json === null)) return fillOlderRows(knex, found, plan);
  return found as StudyJsonVersion[];
}

/** One study result as DICOM JSON text, in SQL over the study row `st`, and its bindings. */
function studyJsonExpression(plan: StudyJsonPlan): [string, Knex.RawBinding[]] {
  const bindings: Knex.RawBinding[] = [JSON.stringify(plan.empty)];
  let dataset = 'st.dataset';
  if (plan.dropKeys) {
    dataset = '(st.dataset - ?::text[])';
    bindings.push(plan.dropKeys);
  }
  const computed: string[] = [];
  for (const tag of plan.computed) {
    const sql = STUDY_COMPUTED[tag];
    if (!sql) throw new Error(`${tag} is not computed at the study level`);
    if (tag === '00081190' && plan.written) {
      computed.push(`'${tag}', '{"vr": "UR"}'::jsonb`);
      continue;
    }
    computed.push(`'${tag}', ${sql}`);
    if (tag === '00081190') bindings.push(plan.studiesUrl);
  }
  const added = computed.length > 0 ? ` || jsonb_build_object(${computed.join(', ')})` : '';
  return [`(?::jsonb || ${dataset}${added})::text`, bindings];
}

/** SOP Instance UIDs of every instance an instance-level search matches (no paging), at most `cap`. */
export async function findQidoInstanceUids(knex: Knex, search: QidoSearch, cap: number): Promise<string[]> {
  if (search.level !== 'instance') throw new Error('findQidoInstanceUids is for instance-level searches');
  const rows = await buildMatching(knex, { ...search, excludeInstances: undefined }).select('i.sop_instance_uid').limit(cap);
  return rows.map((r: { sop_instance_uid: string }) => r.sop_instance_uid);
}

/** One instance of a study as the visible-count computation needs it. */
export interface StudyInstanceRow {
  study_uid: string;
  series_uid: string;
  sop_instance_uid: string;
  sop_class_uid: string;
  modality: string | null;
}

/** Every instance of the given studies, for counts and aggregates of what a caller may see. */
export async function findStudyInstanceUids(knex: Knex, studyUids: readonly string[]): Promise<StudyInstanceRow[]> {
  if (studyUids.length === 0) return [];
  return knex('instances as i')
    .join('series as se', 'se.id', 'i.series_pk')
    .join('studies as st', 'st.id', 'i.study_pk')
    .whereIn('st.study_uid', [...studyUids])
    .select('st.study_uid', 'se.series_uid', 'i.sop_instance_uid', 'i.sop_class_uid', 'se.modality');
}

/** patients.id of every patient with a study in one of the projects (a researcher's candidate patients). */
export async function findPatientPksInProjects(knex: Knex, projectIds: readonly string[] | 'all'): Promise<number[]> {
  const q = knex('studies as st').distinct('st.patient_pk');
  if (projectIds !== 'all') q.whereExists((sub) => sub.select(knex.raw('1')).from('project_studies as ps').whereRaw('ps.study_pk = st.id').whereIn('ps.project_id', [...projectIds]));
  const rows = await q;
  return rows.map((r: { patient_pk: string | number }) => Number(r.patient_pk));
}

/** The filtered, unsorted, unpaged rows of a search's resource level (no select list yet). */
function buildMatching(knex: Knex, search: QidoSearch): Knex.QueryBuilder {
  const { level } = search;
  const alias = ALIAS[level];
  const q = knex(`${TABLE[level]} as ${alias}`);
  const byLevel = groupByLevel(search.conditions);
  if (level === 'instance' && byLevel.series.length > 0) q.join('series as se', 'se.id', 'i.series_pk');
  if (level !== 'study' && byLevel.study.length > 0) q.join('studies as st', 'st.id', `${alias}.study_pk`);
  for (const l of ['study', 'series', 'instance'] as const) {
    if (DEPTH[l] <= DEPTH[level]) for (const c of byLevel[l]) applyCondition(knex, q, c);
  }
  // Conditions below the resource level: the row matches when some child matches (relational query).
  if (level === 'study' && byLevel.instance.length > 0) {
    q.whereExists((sub) => {
      sub.select(knex.raw('1')).from('instances as i').whereRaw('i.study_pk = st.id');
      if (byLevel.series.length > 0) sub.join('series as se', 'se.id', 'i.series_pk');
      for (const c of [...byLevel.series, ...byLevel.instance]) applyCondition(knex, sub, c);
    });
  } else if (level === 'study' && byLevel.series.length > 0) {
    q.whereExists((sub) => {
      sub.select(knex.raw('1')).from('series as se').whereRaw('se.study_pk = st.id');
      for (const c of byLevel.series) applyCondition(knex, sub, c);
    });
  } else if (level === 'series' && byLevel.instance.length > 0) {
    q.whereExists((sub) => {
      sub.select(knex.raw('1')).from('instances as i').whereRaw('i.series_pk = se.id');
      for (const c of byLevel.instance) applyCondition(knex, sub, c);
    });
  }
  const restrict = search.restrictStudies;
  if (restrict) {
    // One correlated EXISTS when the restriction offers it (not a second scan of studies).
    applyStudyRestriction(knex, q, level === 'study' ? 'st.id' : `${alias}.study_pk`, restrict, { fewStudies: namesFewStudies(search) });
  }
  if (level === 'instance' && search.excludeInstances && search.excludeInstances.length > 0) {
    q.whereRaw('NOT (i.sop_instance_uid = ANY(?::text[]))', [search.excludeInstances]);
  }
  return q;
}

function groupByLevel(conditions: QidoCondition[]): Record<QidoLevel, QidoCondition[]> {
  const out: Record<QidoLevel, QidoCondition[]> = { study: [], series: [], instance: [] };
  for (const c of conditions) out[c.column.level].push(c);
  return out;
}

function selectColumns(knex: Knex, q: Knex.QueryBuilder, search: QidoSearch): void {
  const { level } = search;
  const studyFields = (a: string) =>
    `'study_uid', ${a}.study_uid, 'study_num_series', ${a}.num_series, 'study_num_instances', ${a}.num_instances, ` +
    `'modalities', to_jsonb(${a}.modalities), 'sop_classes', to_jsonb(${a}.sop_classes)`;
  if (level === 'study') {
    q.select('st.study_uid', 'st.num_series as study_num_series', 'st.num_instances as study_num_instances', 'st.modalities', 'st.sop_classes');
    selectDataset(knex, q, 'st.dataset', 'study_dataset', search.datasets.study);
    return;
  }
  // Parent rows: one primary-key look-up per returned row, packed as JSON.
  const parent = (table: string, a: string, fk: string, fields: string, selection: DatasetSelection | undefined, name: string) => {
    const [datasetSql, bindings] = datasetExpression(`${a}.dataset`, selection);
    const withDataset = datasetSql ? `${fields}, '${name}_dataset', ${datasetSql}` : fields;
    q.select(knex.raw(`(SELECT jsonb_build_object(${withDataset}) FROM ${table} ${a} WHERE ${a}.id = ${fk}) AS ${name}_row`, bindings));
  };
  parent('studies', 'pst', `${ALIAS[level]}.study_pk`, studyFields('pst'), search.datasets.study, 'study');
  if (level === 'series') {
    q.select('se.series_uid', 'se.num_instances as series_num_instances');
    selectDataset(knex, q, 'se.dataset', 'series_dataset', search.datasets.series);
  } else {
    parent('series', 'pse', 'i.series_pk', `'series_uid', pse.series_uid, 'series_num_instances', pse.num_instances`, search.datasets.series, 'series');
    q.select('i.sop_instance_uid');
    selectDataset(knex, q, 'i.dataset', 'instance_dataset', search.datasets.instance);
  }
}

function selectDataset(knex: Knex, q: Knex.QueryBuilder, source: string, name: string, selection: DatasetSelection | undefined): void {
  const [sql, bindings] = datasetExpression(source, selection);
  if (sql) q.select(knex.raw(`${sql} AS ${name}`, bindings));
}

/** The JSONB to return for a dataset: all of it, or only the wanted keys (a full header can be tens of kilobytes). */
function datasetExpression(source: string, selection: DatasetSelection | undefined): [string | null, Knex.RawBinding[]] {
  if (!selection) return [null, []];
  if (selection === 'all') return [source, []];
  if (selection.length === 0) return [null, []];
  return [`(SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb) FROM jsonb_each(${source}) e WHERE e.key = ANY(?::text[]))`, [selection]];
}

/**
 * Unique orders that indexes serve: newest studies first; a study's series and a series'
 * instances in their natural numbering; otherwise newest rows first (by primary key).
 */
function orderRows(q: Knex.QueryBuilder, search: QidoSearch): void {
  if (search.level === 'study') {
    q.orderByRaw('st.study_date DESC NULLS LAST, st.study_time DESC NULLS LAST, st.id DESC');
  } else if (search.level === 'series') {
    if (search.scope === 'study') q.orderByRaw('se.series_number ASC NULLS LAST, se.id ASC');
    else q.orderByRaw('se.id DESC');
  } else if (search.scope === 'series') {
    q.orderByRaw('i.instance_number ASC NULLS LAST, i.id ASC');
  } else if (search.scope === 'study') {
    q.orderByRaw('i.series_pk ASC, i.instance_number ASC NULLS LAST, i.id ASC');
  } else {
    q.orderByRaw('i.id DESC');
  }
}

/** Adds one condition (its values OR-ed) to a builder where the level tables carry their aliases. */
function applyCondition(knex: Knex, q: Knex.QueryBuilder, condition: QidoCondition): void {
  if (condition.shift) {
    applyShifted(knex, q, condition, condition.shift);
    return;
  }
  const { column } = condition;
  const col = `${ALIAS[column.level]}.${column.column}`;
  q.where((group) => {
    const equals = condition.anyOf.filter((m): m is Extract<QidoMatch, { type: 'equal' }> => m.type === 'equal').map((m) => m.value);
    if (equals.length > 0) orEquals(knex, group, col, column, equals);
    for (const m of condition.anyOf) {
      if (m.type === 'equal') continue;
      group.orWhere((one) => applyMatch(knex, one, col, column, m));
    }
  });
}

function orEquals(knex: Knex, q: Knex.QueryBuilder, col: string, column: QidoColumn, values: Array<string | number>): void {
  switch (column.kind) {
    case 'text-array':
      // `&&` (overlap) is served by the column's GIN index.
      q.orWhereRaw('?? && ?::text[]', [col, values.map(String)]);
      return;
    case 'text-lower':
      q.orWhereRaw('lower(??) = ANY(?::text[])', [col, values.map((v) => String(v).toLowerCase())]);
      return;
    case 'time':
    case 'datetime':
      // A time is a range at its own precision: 1015 covers 10:15:00 to 10:15:59.999999.
      for (const v of values) q.orWhere((one) => applyMatch(knex, one, col, column, { type: 'range', from: String(v), to: String(v) }));
      return;
    default:
      q.orWhereIn(col, values);
  }
}

function applyMatch(knex: Knex, q: Knex.QueryBuilder, col: string, column: QidoColumn, m: QidoMatch): void {
  switch (m.type) {
    case 'equal':
      orEquals(knex, q, col, column, [m.value]);
      return;
    case 'wildcard':
      if (column.kind === 'text-array') {
        q.whereRaw('EXISTS (SELECT 1 FROM unnest(??) AS v(x) WHERE v.x LIKE ?)', [col, m.pattern]);
      } else if (column.kind === 'text-lower') {
        q.whereRaw('lower(??) LIKE ?', [col, m.pattern.toLowerCase()]);
      } else {
        q.whereRaw('?? LIKE ?', [col, m.pattern]);
      }
      return;
    case 'range':
      applyRange(q, col, column, m);
      return;
    case 'words': {
      if (!column.words) throw new Error(`column ${column.column} has no words column`);
      const tsquery = m.words.map((w) => `${w}:*`).join(' & ');
      q.whereRaw(`??.?? @@ to_tsquery('simple', ?)`, [ALIAS[column.level], column.words, tsquery]);
      return;
    }
  }
}

function applyRange(q: Knex.QueryBuilder, col: string, column: QidoColumn, m: { from?: string; to?: string }): void {
  if (column.kind === 'date') {
    if (m.from) q.where(col, '>=', m.from);
    if (m.to) q.where(col, '<=', m.to);
    return;
  }
  // Times and datetimes are kept as DICOM strings: compare byte-wise (COLLATE "C", as indexed).
  // The upper end covers every finer value it is a prefix of ('~' sorts after digits and '.').
  if (m.from) q.whereRaw('?? COLLATE "C" >= ?', [col, m.from]);
  if (m.to) q.whereRaw('?? COLLATE "C" <= ?', [col, `${m.to}~`]);
}

/**
 * A date or datetime condition on the value a researcher sees (PS3.15 E.3.6): the stored value
 * moved by the row's patient's offset. The offsets join through the row's study to its patient;
 * a patient without an offset matches nothing.
 */
function applyShifted(knex: Knex, q: Knex.QueryBuilder, condition: QidoCondition, shift: DateShift): void {
  const { column } = condition;
  const alias = ALIAS[column.level];
  const studyPk = column.level === 'study' ? 'st.id' : `${alias}.study_pk`;
  const col = `${alias}.${column.column}`;
  if (!/^[a-z_]+$/.test(column.column)) throw new Error(`unsafe column ${column.column}`);
  if (column.kind !== 'date' && column.kind !== 'datetime') throw new Error(`column ${column.column} holds no dates to shift`);
  const shifted =
    column.kind === 'date'
      ? `(${col} + m.d)`
      : `(CASE WHEN ${col} ~ '^[0-9]{8}' THEN to_char(to_date(left(${col}, 8), 'YYYYMMDD') + m.d, 'YYYYMMDD') || substr(${col}, 9) END)`;
  q.whereExists((sub) => {
    sub
      .select(knex.raw('1'))
      .from('studies as sx')
      .join(knex.raw('unnest(?::bigint[], ?::int[]) AS m(pk, d)', [shift.patientPks, shift.days]), 'm.pk', 'sx.patient_pk')
      .whereRaw(`sx.id = ${studyPk}`)
      .where((group) => {
        for (const m of condition.anyOf) group.orWhere((one) => shiftedMatch(one, shifted, column.kind, m));
      });
  });
}

function shiftedMatch(q: Knex.QueryBuilder, expr: string, kind: ColumnKind, m: QidoMatch): void {
  if (m.type === 'equal') {
    if (kind === 'date') q.whereRaw(`${expr} = ?::date`, [String(m.value)]);
    else shiftedMatch(q, expr, kind, { type: 'range', from: String(m.value), to: String(m.value) });
    return;
  }
  if (m.type !== 'range') throw new Error(`a ${m.type} match cannot apply to a shifted date`);
  if (kind === 'date') {
    if (m.from) q.whereRaw(`${expr} >= ?::date`, [m.from]);
    if (m.to) q.whereRaw(`${expr} <= ?::date`, [m.to]);
    return;
  }
  if (m.from) q.whereRaw(`${expr} COLLATE "C" >= ?`, [m.from]);
  if (m.to) q.whereRaw(`${expr} COLLATE "C" <= ?`, [`${m.to}~`]);
}
