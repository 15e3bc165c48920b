/**
 * The QIDO-RS vocabulary: match keys per level (dicomweb/query-keys.json), default return
 * attributes, what each level keeps (dicomweb/levels.json), and attribute IDs given as a
 * keyword or a tag (PS3.18 8.3.4.1: `{dicomTag}`, `{dicomKeyword}`, and `.`-separated paths).
 */
import queryKeys from '../../dicomweb/query-keys.json';
import levels from '../../dicomweb/levels.json';
import type { ColumnKind, QidoColumn, QidoLevel } from '../db/qido-search';
import { lookupDictionaryVr } from '../dicom/value-representation';

/** A supported match key. */
export interface MatchKey {
  keyword: string;
  /** Tag path: `00100020`, or `00220015.00080100` for a key inside a sequence. */
  tag: string;
  vr: string;
  column: QidoColumn;
  /** Whether the key's (top-level) attribute is returned when it is matched on. */
  returned: boolean;
}

interface KeyDefinition {
  keyword: string;
  tag: string;
  vr: string;
  column: string;
  kind: string;
  words?: string;
  returned?: boolean;
}

export const LEVELS: readonly QidoLevel[] = ['study', 'series', 'instance'];
export const LEVEL_DEPTH: Record<QidoLevel, number> = { study: 0, series: 1, instance: 2 };

const KEYS_BY_TAG = new Map<string, MatchKey>();
for (const level of LEVELS) {
  for (const def of (queryKeys[level].keys as KeyDefinition[])) {
    KEYS_BY_TAG.set(def.tag, {
      keyword: def.keyword,
      tag: def.tag,
      vr: def.vr,
      column: { level, column: def.column, kind: def.kind as ColumnKind, words: def.words },
      returned: def.returned !== false,
    });
  }
}

/** The match key whose column a condition uses (columns are unique per level). */
export function findMatchKeyByColumn(level: QidoLevel, column: string): MatchKey | undefined {
  for (const key of KEYS_BY_TAG.values()) if (key.column.level === level && key.column.column === column) return key;
  return undefined;
}

/** Default return attributes of a level (PS3.18 Tables 10.6.3-3, -4, -5). */
export function defaultAttributes(level: QidoLevel): string[] {
  return queryKeys[level].defaults;
}

/** The match key for a tag path, if this server supports matching on it. */
export function findMatchKey(tagPath: string): MatchKey | undefined {
  return KEYS_BY_TAG.get(tagPath);
}

/** Where a return attribute comes from: a stored level dataset, a computed value, or nowhere. */
export type AttributeSource = { from: 'dataset'; level: QidoLevel } | { from: 'computed' } | { from: 'unavailable' };

const STUDY_STORED = new Set<string>(levels.study.stored);
const SERIES_STORED = new Set<string>(levels.series.stored);
const COMPUTED: Record<QidoLevel, Set<string>> = {
  study: new Set(levels.study.computed),
  series: new Set([...levels.series.computed, ...levels.study.computed]),
  instance: new Set([...levels.instance.computed, ...levels.series.computed, ...levels.study.computed]),
};

/**
 * Where an attribute of a result at `level` is read from: computed values first, then the
 * highest level row that keeps it; only instance rows hold the whole header.
 */
export function attributeSource(tag: string, level: QidoLevel): AttributeSource {
  // Computed at a level: its own counts and RetrieveURL plus its parents' aggregates.
  if (COMPUTED[level].has(tag)) return { from: 'computed' };
  if (STUDY_STORED.has(tag)) return { from: 'dataset', level: 'study' };
  if (level !== 'study' && SERIES_STORED.has(tag)) return { from: 'dataset', level: 'series' };
  if (level === 'instance') return { from: 'dataset', level: 'instance' };
  return { from: 'unavailable' };
}

interface DictionaryEntry {
  tag: string;
  vr: string;
  name: string;
}

let nameMap: Record<string, DictionaryEntry | undefined> | null = null;

function dictionaryByKeyword(): Record<string, DictionaryEntry | undefined> {
  // Loaded on first use so that importing this module does no work (STYLE 8).
  nameMap ??= (require('dcmjs') as { data: { DicomMetaDictionary: { nameMap: Record<string, DictionaryEntry | undefined> } } }).data
    .DicomMetaDictionary.nameMap;
  return nameMap;
}

/** Result of resolving one attribute ID segment. */
export type ResolvedAttribute = { ok: true; tag: string } | { ok: false; reason: 'unknown' | 'malformed' };

/**
 * Resolves a keyword or an 8-hex-digit tag to the tag key (upper case), e.g. `PatientID` or
 * `00100020` -> `00100020`. Tags of the form `(0010,0020)` or with too few digits are malformed.
 */
export function resolveAttribute(segment: string): ResolvedAttribute {
  if (/^[0-9A-Fa-f]{8}$/.test(segment)) return { ok: true, tag: segment.toUpperCase() };
  if (/^[A-Za-z][A-Za-z0-9]*$/.test(segment)) {
    // A keyword that spells hex digits only (e.g. 'FACE0001') is taken as a tag above; none exists in PS3.6.
    const entry = Object.prototype.hasOwnProperty.call(dictionaryByKeyword(), segment) ? dictionaryByKeyword()[segment] : undefined;
    const m = entry && /^\(([0-9A-F]{4}),([0-9A-F]{4})\)$/i.exec(entry.tag);
    return m ? { ok: true, tag: `${m[1]}${m[2]}`.toUpperCase() } : { ok: false, reason: 'unknown' };
  }
  return { ok: false, reason: 'malformed' };
}

/** Resolves a `.`-separated attribute path (PS3.18 8.3.4.1) to tag keys joined by `.`. */
export function resolveAttributePath(id: string): ResolvedAttribute {
  const tags: string[] = [];
  for (const segment of id.split('.')) {
    const r = resolveAttribute(segment);
    if (!r.ok) return r;
    tags.push(r.tag);
  }
  return { ok: true, tag: tags.join('.') };
}

/** The VR of a tag from the data dictionary, when it has exactly one (used for zero-length return values). */
export function dictionaryVr(tag: string): string | undefined {
  const known = KEYS_BY_TAG.get(tag);
  if (known) return known.vr;
  const vr = lookupDictionaryVr(parseInt(tag, 16));
  return vr && /^[A-Z]{2}$/.test(vr) ? vr : undefined;
}

/** Keyword of a tag for messages, e.g. `PatientID (00100020)`. */
export function describeAttribute(tagPath: string): string {
  const key = KEYS_BY_TAG.get(tagPath);
  if (key) return `${key.keyword} (${tagPath})`;
  const names = tagPath.split('.').map((t) => {
    const entry = lookupDictionaryEntryName(t);
    return entry ?? t;
  });
  return `${names.join('.')} (${tagPath})`;
}

function lookupDictionaryEntryName(tag: string): string | undefined {
  const dict = (require('dcmjs') as { data: { DicomMetaDictionary: { dictionary: Record<string, DictionaryEntry | undefined> } } }).data
    .DicomMetaDictionary.dictionary;
  const entry = dict[`(${tag.slice(0, 4)},${tag.slice(4)})`];
  return entry?.name;
}
