/**
 * QIDO-RS result data sets (PS3.18 10.6.3.3, DICOM JSON per Annex F): the requested attributes
 * from the stored study/series/instance datasets, plus values computed from the index
 * (counts, ModalitiesInStudy, RetrieveURL, InstanceAvailability).
 */
import levels from '../../dicomweb/levels.json';
import {
  isStudyComputedTag,
  STUDY_DEFAULTS_TEXT_TAGS,
  STUDY_URL_PLACEHOLDER,
  type DatasetSelection,
  type QidoLevel,
  type QidoRow,
  type StudyJsonPlan,
  type StudyJsonRow,
} from '../db/qido-search';
import type { DicomJson, DicomJsonElement } from '../dicom/types';
import { attributeSource, defaultAttributes, dictionaryVr, LEVEL_DEPTH } from './query-keys';

/** What a search returns for each result. */
export interface ReturnPlan {
  level: QidoLevel;
  /** Top-level tags, sorted; ignored when includeAll. */
  tags: string[];
  includeAll: boolean;
}

/**
 * The return attributes of a search: the level's defaults, the defaults of the parent levels
 * when the resource spans them (PS3.18 10.6.3.3: all studies' series carry study attributes,
 * and so on), the parents' unique keys always, and the extra tags the query asked for.
 */
export function planReturn(level: QidoLevel, scope: 'all' | 'study' | 'series', extra: Iterable<string>, includeAll: boolean): ReturnPlan {
  const tags = new Set<string>(defaultAttributes(level));
  if (level !== 'study') tags.add('0020000D');
  if (level === 'instance') tags.add('0020000E');
  if (level === 'series' && scope === 'all') defaultAttributes('study').forEach((t) => tags.add(t));
  if (level === 'instance' && scope !== 'series') defaultAttributes('series').forEach((t) => tags.add(t));
  if (level === 'instance' && scope === 'all') defaultAttributes('study').forEach((t) => tags.add(t));
  for (const t of extra) tags.add(t);
  // Parents' RetrieveURLs and counts share tags with the level's own; attributeSource() picks the right one.
  return { level, tags: [...tags].filter((t) => attributeSource(t, level).from !== 'unavailable').sort(), includeAll };
}

/** Which keys of which level's JSONB dataset the database must hand back for a plan. */
export function datasetSelections(plan: ReturnPlan): Partial<Record<QidoLevel, DatasetSelection>> {
  if (plan.includeAll) {
    // An instance row holds its whole header; study and series rows hold their level's subset.
    if (plan.level === 'instance') return { instance: 'all' };
    if (plan.level === 'series') return { study: 'all', series: 'all' };
    return { study: 'all' };
  }
  const out: Partial<Record<QidoLevel, string[]>> = {};
  for (const tag of plan.tags) {
    const source = attributeSource(tag, plan.level);
    if (source.from === 'dataset') (out[source.level] ??= []).push(tag);
  }
  return out;
}

/** Computed attributes of a study result with includefield=all (those attributeSource() calls computed at the study level). */
const STUDY_COMPUTED_TAGS = ['00080056', '00080061', '00080062', '00201206', '00201208', '00081190'].filter((t) => attributeSource(t, 'study').from === 'computed');

/**
 * What the database must write for each study result of a plan (see buildResult, which this
 * mirrors): the requested stored attributes, zero-length when absent, and the computed ones.
 * The study dataset holds only the keys of dicomweb/levels.json (the index writer cuts it so,
 * see pickStudyAttributes), so leaving out the other listed keys leaves exactly the requested ones.
 */
export function planStudyJson(plan: ReturnPlan, baseUrl: string): StudyJsonPlan {
  if (plan.level !== 'study') throw new Error('planStudyJson is for study-level plans');
  const studiesUrl = `${baseUrl}/studies/`;
  if (plan.includeAll) return { empty: {}, dropKeys: null, computed: STUDY_COMPUTED_TAGS, studiesUrl, written: false };
  const written = plan.tags.length === STUDY_DEFAULTS_TEXT_TAGS.length && plan.tags.every((t, i) => t === STUDY_DEFAULTS_TEXT_TAGS[i]);
  const empty: Record<string, { vr: string }> = {};
  const wanted = new Set<string>();
  const computed: string[] = [];
  for (const tag of plan.tags) {
    const source = attributeSource(tag, 'study');
    if (source.from === 'computed') {
      if (isStudyComputedTag(tag)) computed.push(tag);
      continue;
    }
    if (source.from !== 'dataset') continue;
    wanted.add(tag);
    const vr = dictionaryVr(tag);
    if (vr) empty[tag] = { vr };
  }
  return { empty, dropKeys: levels.study.stored.filter((t) => !wanted.has(t)), computed, studiesUrl, written };
}

/**
 * Text searches by rare letters: a pattern that starts with `"` makes the search stop at every
 * quote of a JSON text, ten times slower on a page of results than these.
 * `BulkDataURI` anywhere sends a row to finishStudyJson, which looks for the key itself.
 */
const BULK_DATA_WORD = 'BulkDataURI';
/** The end of STUDY_URL_PLACEHOLDER, found first; the whole placeholder is then checked there. */
const PLACEHOLDER_END = 'UR"}';
/** A UID that goes into a RetrieveURL as it is (nothing to percent-encode, nothing to escape in JSON). */
const PLAIN_UID = /^[0-9.]+$/;

/**
 * The response body of a study search from the rows the database wrote (PS3.18 F.2), as text:
 * each row's text as it was read, RetrieveURLs of `qido_json` texts spliced in between slices of
 * it. For `SearchResponse.json`; the bytes that are sent are written by writeStudyResultBytes.
 */
export function writeStudyResults(rows: readonly StudyJsonRow[], plan: StudyJsonPlan): string {
  const pieces: string[] = ['['];
  const urlHead = studyResultUrlHead(plan);
  for (let i = 0; i < rows.length; i++) {
    if (i > 0) pieces.push(',');
    const { json, study_uid: uid } = rows[i];
    const at = plan.written ? findUrlPlaceholder(json) : -1;
    if (needsFinishing(rows[i], plan.written, at)) pieces.push(finishStudyJson(rows[i], plan));
    else if (plan.written) pieces.push(json.slice(0, at), urlHead, uid, STUDY_URL_TAIL, json.slice(at + STUDY_URL_PLACEHOLDER.length));
    else pieces.push(json);
  }
  pieces.push(']');
  return pieces.join('');
}

/** Buffers to write an answer into: handed out by `take` (at least `size` bytes), handed back by `give` once unused. */
export interface ByteBuffers {
  take(size: number): Buffer;
  give(buffer: Buffer): void;
}

/**
 * The response body of a study search as UTF-8 bytes, written into one buffer from `buffers`:
 * the UTF-8 of writeStudyResults' text, byte for byte. Each row's text is written whole (ASCII or
 * not), then its tail after STUDY_URL_PLACEHOLDER is moved up in the buffer and the RetrieveURL
 * written into the gap: no slice of the row's text is made and no separate pass checks it for
 * ASCII. node-postgres hands every text column over decoded to a string (pg-protocol decodes the
 * DataRow fields whatever their format code), so the rows' bytes cannot be forwarded as read.
 * Measured at 1M instances (821 rows, 765 KB): see the commit message.
 */
export function writeStudyResultBytes(rows: readonly StudyJsonRow[], plan: StudyJsonPlan, buffers: ByteBuffers): { buffer: Buffer; length: number } {
  const urlHead = Buffer.from(studyResultUrlHead(plan), 'utf8');
  // Exact for ASCII rows; room() makes more when a row's UTF-8 may not fit.
  let estimate = 2;
  for (const row of rows) estimate += row.json.length + row.study_uid.length + urlHead.length + STUDY_URL_TAIL.length + 1;
  let buffer = buffers.take(estimate);
  let offset = 0;
  const room = (bytes: number) => {
    if (offset + bytes <= buffer.length) return;
    const larger = buffers.take(Math.max(2 * buffer.length, offset + bytes));
    buffer.copy(larger, 0, 0, offset);
    buffers.give(buffer);
    buffer = larger;
  };
  room(1);
  buffer[offset++] = 0x5b; // [
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i];
    const { json, study_uid: uid } = row;
    const at = plan.written ? findUrlPlaceholder(json) : -1;
    const finish = needsFinishing(row, plan.written, at);
    const splice = plan.written && !finish;
    const text = finish ? finishStudyJson(row, plan) : json;
    // A UTF-16 code unit takes at most three UTF-8 bytes; the URL replaces the placeholder.
    room(1 + 3 * text.length + urlHead.length + uid.length + STUDY_URL_TAIL.length);
    if (i > 0) buffer[offset++] = 0x2c; // ,
    const written = buffer.write(text, offset, 'utf8');
    if (!splice) {
      offset += written;
      continue;
    }
    // Bytes = characters only when every character is ASCII (any other takes two or more bytes).
    const head = offset + (written === json.length ? at : Buffer.byteLength(json.slice(0, at), 'utf8'));
    const tail = head + STUDY_URL_PLACEHOLDER.length;
    const tailLength = offset + written - tail;
    let url = head + urlHead.length + uid.length + STUDY_URL_TAIL.length;
    buffer.copyWithin(url, tail, tail + tailLength);
    url = head + urlHead.copy(buffer, head);
    url += buffer.write(uid, url, 'latin1');
    url += buffer.write(STUDY_URL_TAIL, url, 'latin1');
    offset = url + tailLength;
  }
  room(1);
  buffer[offset++] = 0x5d; // ]
  return { buffer, length: offset };
}

/**
 * One study's result as UTF-8 bytes, as `studies.qido_json` holds it (StudyResultCache keeps
 * these): a range of memory that the results read together share (one allocation, no view
 * object per result: fewer objects for the garbage collector to trace when many are kept).
 */
export interface StudyResultBytes {
  studyUid: string;
  /** Holds the UTF-8 bytes of the text (RetrieveURL as STUDY_URL_PLACEHOLDER) at [start, end). */
  memory: Buffer;
  start: number;
  end: number;
  /**
   * Where STUDY_URL_PLACEHOLDER starts in `memory` (with `head`: where the RetrieveURL element
   * written in its place starts); -1 when the text needs finishStudyJson (a BulkDataURI, a UID to
   * percent-encode).
   */
  urlAt: number;
  /**
   * The RetrieveURL head (studyResultUrlHead) the text was finished with: its RetrieveURL element,
   * `memory[urlAt, urlEnd)`, is written, so that an answer with the same head copies the text as
   * it is. Absent: the text holds STUDY_URL_PLACEHOLDER.
   */
  head?: Buffer;
  urlEnd?: number;
}

/**
 * Where the RetrieveURL of a `qido_json` text (a written plan's row) goes in its UTF-8 bytes
 * (`byteLength` of them), or -1 when the text needs finishStudyJson.
 */
export function studyResultUrlAt(row: StudyJsonRow, byteLength: number): number {
  const at = findUrlPlaceholder(row.json);
  if (needsFinishing(row, true, at)) return -1;
  // Bytes = characters only when every character is ASCII.
  return byteLength === row.json.length ? at : Buffer.byteLength(row.json.slice(0, at), 'utf8');
}

/** Where STUDY_URL_PLACEHOLDER starts in a `qido_json` text (characters), or -1 when the text needs finishStudyJson. */
export function studyResultSpliceAt(row: StudyJsonRow): number {
  const at = findUrlPlaceholder(row.json);
  return needsFinishing(row, true, at) ? -1 : at;
}

/** A `qido_json` text (a written plan's row) as a result kept as bytes, in memory of its own. */
export function studyResultBytes(row: StudyJsonRow): StudyResultBytes {
  const memory = Buffer.from(row.json, 'utf8');
  const urlAt = studyResultUrlAt(row, memory.length);
  return { studyUid: row.study_uid, memory, start: 0, end: memory.length, urlAt };
}

/** The rows StudyResultBytes stand for (for the text of an answer: `SearchResponse.json`). */
export function studyResultRows(results: readonly StudyResultBytes[]): StudyJsonRow[] {
  return results.map((r) => {
    if (!r.head) return { study_uid: r.studyUid, json: r.memory.toString('utf8', r.start, r.end) };
    // A finished text: STUDY_URL_PLACEHOLDER back in place of its RetrieveURL element.
    return { study_uid: r.studyUid, json: `${r.memory.toString('utf8', r.start, r.urlAt)}${STUDY_URL_PLACEHOLDER}${r.memory.toString('utf8', r.urlEnd, r.end)}` };
  });
}

/**
 * The response body of a study search from study results kept as bytes (a written plan's):
 * the bytes of writeStudyResults' text over studyResultRows, written into one buffer from
 * `buffers` by copying each result's bytes around its RetrieveURL, without any text.
 */
export function writeStudyResultBytesFrom(results: readonly StudyResultBytes[], plan: StudyJsonPlan, buffers: ByteBuffers): { buffer: Buffer; length: number } {
  if (!plan.written) throw new Error('kept study results are qido_json texts: a written plan only');
  const urlHead = Buffer.from(studyResultUrlHead(plan), 'utf8');
  const urlBytes = urlHead.length + STUDY_URL_TAIL.length;
  // Whether a result was finished with this answer's head (compared again only when the head object changes).
  let lastHead: Buffer | undefined;
  let sameHead = false;
  const asIs = (r: StudyResultBytes) => {
    if (!r.head) return false;
    if (r.head !== lastHead) {
      lastHead = r.head;
      sameHead = r.head.equals(urlHead);
    }
    return sameHead;
  };
  // The rare result that needs finishing is finished (per request: its URL is the request's).
  const finished = new Map<number, Buffer>();
  // Brackets and commas.
  let size = 2 + Math.max(0, results.length - 1);
  for (let i = 0; i < results.length; i++) {
    const r = results[i];
    if (r.urlAt < 0) {
      const bytes = Buffer.from(finishStudyJson({ study_uid: r.studyUid, json: r.memory.toString('utf8', r.start, r.end) }, plan), 'utf8');
      finished.set(i, bytes);
      size += bytes.length;
    } else if (asIs(r)) {
      size += r.end - r.start;
    } else {
      size += r.end - r.start - (urlEndOf(r) - r.urlAt) + urlBytes + r.studyUid.length;
    }
  }
  const buffer = buffers.take(size);
  let offset = 0;
  buffer[offset++] = 0x5b; // [
  for (let i = 0; i < results.length; i++) {
    if (i > 0) buffer[offset++] = 0x2c; // ,
    const r = results[i];
    const whole = finished.get(i);
    if (whole) {
      offset += whole.copy(buffer, offset);
      continue;
    }
    if (asIs(r)) {
      // Results kept one after the other, a comma between them (as StudyResultCache writes them), are copied at once.
      let last = r;
      for (let next = results[i + 1]; next && next.memory === r.memory && next.start === last.end + 1 && r.memory[last.end] === 0x2c && asIs(next); next = results[i + 1]) {
        last = next;
        i++;
      }
      offset += r.memory.copy(buffer, offset, r.start, last.end);
      continue;
    }
    offset += r.memory.copy(buffer, offset, r.start, r.urlAt);
    offset += urlHead.copy(buffer, offset);
    // PLAIN_UID: digits and dots, one byte each.
    offset += buffer.write(r.studyUid, offset, 'latin1');
    offset += buffer.write(STUDY_URL_TAIL, offset, 'latin1');
    offset += r.memory.copy(buffer, offset, urlEndOf(r), r.end);
  }
  buffer[offset++] = 0x5d; // ]
  return { buffer, length: offset };
}

/** Where a result's RetrieveURL element (or STUDY_URL_PLACEHOLDER) ends in its memory. */
function urlEndOf(r: StudyResultBytes): number {
  return r.head ? r.urlEnd! : r.urlAt + STUDY_URL_PLACEHOLDER.length;
}

/** The end of a spliced RetrieveURL element, after the UID. */
export const STUDY_URL_TAIL = '"]}';

/** The RetrieveURL element of a plan's study results up to the UID (StudyResultBytes.head holds it as bytes). */
export function studyResultUrlHead(plan: StudyJsonPlan): string {
  return `"00081190": {"vr": "UR", "Value": [${JSON.stringify(plan.studiesUrl).slice(0, -1)}`;
}

/** Whether a row needs what a splice does not do (a BulkDataURI to drop, a UID to percent-encode, no placeholder): finishStudyJson rebuilds it. */
function needsFinishing(row: StudyJsonRow, written: boolean, at: number): boolean {
  return row.json.includes(BULK_DATA_WORD) || !PLAIN_UID.test(row.study_uid) || (written && at < 0);
}

/** Where STUDY_URL_PLACEHOLDER starts in a `qido_json` text, or -1. */
function findUrlPlaceholder(json: string): number {
  const end = json.indexOf(PLACEHOLDER_END);
  if (end < 0) return -1;
  const at = end + PLACEHOLDER_END.length - STUDY_URL_PLACEHOLDER.length;
  // Another element can end the same way (a name ending in "UR"): then search on from there.
  return at >= 0 && json.startsWith(STUDY_URL_PLACEHOLDER, at) ? at : json.indexOf(STUDY_URL_PLACEHOLDER, end);
}

/**
 * One study result as the database wrote it, made final: the RetrieveURL of a `qido_json` text
 * filled in, and the rare row that needs what SQL does not do (a BulkDataURI to drop, a UID
 * that needs percent-encoding in a RetrieveURL written by SQL) rebuilt; other rows are kept as written.
 */
export function finishStudyJson(row: StudyJsonRow, plan: StudyJsonPlan): string {
  let json = row.json;
  const url = `${plan.studiesUrl}${encodeURIComponent(row.study_uid)}`;
  if (plan.written) {
    const at = json.indexOf(STUDY_URL_PLACEHOLDER);
    if (at >= 0) json = `${json.slice(0, at)}"00081190": {"vr": "UR", "Value": [${JSON.stringify(url)}]}${json.slice(at + STUDY_URL_PLACEHOLDER.length)}`;
    if (!json.includes('"BulkDataURI"')) return json;
  } else if (/^[0-9.]+$/.test(row.study_uid) && !json.includes('"BulkDataURI"')) {
    return json;
  }
  const parsed = JSON.parse(json) as DicomJson;
  const out: DicomJson = {};
  for (const tag of Object.keys(parsed)) {
    const element = withoutRelativeBulkData(parsed[tag], undefined);
    if (element) out[tag] = element;
  }
  if (out['00081190']) out['00081190'] = { vr: 'UR', Value: [url] };
  return JSON.stringify(out);
}

/** URLs of the resources a row stands for (PS3.18 10.4.1). */
function retrieveUrl(row: QidoRow, level: QidoLevel, baseUrl: string): string {
  let url = `${baseUrl}/studies/${encodeURIComponent(row.study_uid)}`;
  if (LEVEL_DEPTH[level] >= 1) url += `/series/${encodeURIComponent(row.series_uid ?? '')}`;
  if (level === 'instance') url += `/instances/${encodeURIComponent(row.sop_instance_uid ?? '')}`;
  return url;
}

function computed(tag: string, row: QidoRow, level: QidoLevel, baseUrl: string): DicomJsonElement | undefined {
  const list = (vr: string, v: unknown[]) => (v.length > 0 ? { vr, Value: v } : { vr });
  switch (tag) {
    case '00080056':
      return { vr: 'CS', Value: ['ONLINE'] };
    case '00080061':
      return list('CS', row.modalities ?? []);
    case '00080062':
      return list('UI', row.sop_classes ?? []);
    case '00201206':
      return { vr: 'IS', Value: [Number(row.study_num_series)] };
    case '00201208':
      return { vr: 'IS', Value: [Number(row.study_num_instances)] };
    case '00201209':
      return row.series_num_instances === undefined ? undefined : { vr: 'IS', Value: [Number(row.series_num_instances)] };
    case '00081190':
      return { vr: 'UR', Value: [retrieveUrl(row, level, baseUrl)] };
    default:
      return undefined;
  }
}

/** One result data set, attributes in ascending tag order (PS3.18 F.2). */
export function buildResult(row: QidoRow, plan: ReturnPlan, baseUrl: string): DicomJson {
  const { level } = plan;
  const datasets: Record<QidoLevel, DicomJson | undefined> = {
    study: row.study_dataset as DicomJson | undefined,
    series: row.series_dataset as DicomJson | undefined,
    instance: row.instance_dataset as DicomJson | undefined,
  };
  const out: DicomJson = {};
  if (plan.includeAll) {
    Object.assign(out, datasets.study, datasets.series, datasets.instance);
    for (const tag of ['00080056', '00080061', '00080062', '00201206', '00201208', '00201209', '00081190']) {
      if (attributeSource(tag, level).from !== 'computed') continue;
      const element = computed(tag, row, level, baseUrl);
      if (element) out[tag] = element;
    }
  } else {
    for (const tag of plan.tags) {
      const source = attributeSource(tag, level);
      let element: DicomJsonElement | undefined;
      if (source.from === 'computed') element = computed(tag, row, level, baseUrl);
      else if (source.from === 'dataset') element = datasets[source.level]?.[tag];
      if (!element) {
        // A requested attribute without a value is returned zero-length (PS3.4 C.2.2.1.2).
        const vr = dictionaryVr(tag);
        if (vr) element = { vr };
      }
      if (element) out[tag] = element;
    }
  }
  const instanceUrl = level === 'instance' ? retrieveUrl(row, level, baseUrl) : undefined;
  const sorted: DicomJson = {};
  for (const tag of Object.keys(out).sort()) {
    const element = withoutRelativeBulkData(out[tag], instanceUrl);
    if (element) sorted[tag] = element;
  }
  return sorted;
}

/**
 * Stored headers carry BulkDataURIs relative to their instance (`bulkdata/...`). Results at the
 * instance level get them absolute; study and series results, which have no instance, drop them.
 */
function withoutRelativeBulkData(element: DicomJsonElement, instanceUrl: string | undefined): DicomJsonElement | undefined {
  if (element.BulkDataURI !== undefined) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(element.BulkDataURI)) return element;
    return instanceUrl ? { ...element, BulkDataURI: `${instanceUrl}/${element.BulkDataURI}` } : undefined;
  }
  if (element.vr !== 'SQ' || !element.Value) return element;
  const items = element.Value.map((item) => {
    const copy: DicomJson = {};
    for (const [tag, child] of Object.entries(item as DicomJson)) {
      const kept = withoutRelativeBulkData(child, instanceUrl);
      if (kept) copy[tag] = kept;
    }
    return copy;
  });
  return { ...element, Value: items };
}
