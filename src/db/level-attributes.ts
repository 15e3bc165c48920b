import levels from '../../dicomweb/levels.json';
import type { DicomJson } from '../dicom/types';

const STUDY_TAGS = new Set<string>(levels.study.stored);
const SERIES_TAGS = new Set<string>(levels.series.stored);

/** The study-level subset of an instance header (dicomweb/levels.json), kept on the study row. */
export function pickStudyAttributes(dataset: DicomJson): DicomJson {
  return pick(dataset, STUDY_TAGS);
}

/** The series-level subset of an instance header, kept on the series row. */
export function pickSeriesAttributes(dataset: DicomJson): DicomJson {
  return pick(dataset, SERIES_TAGS);
}

function pick(dataset: DicomJson, tags: Set<string>): DicomJson {
  const out: DicomJson = {};
  for (const tag of Object.keys(dataset)) if (tags.has(tag)) out[tag] = dataset[tag];
  return out;
}

/** Removes NUL characters from every string in a JSON value (PostgreSQL jsonb cannot store U+0000). */
export function stripNul<T>(value: T): T {
  if (typeof value === 'string') return value.replace(/\u0000/g, '') as T;
  if (Array.isArray(value)) return value.map((v) => stripNul(v)) as T;
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = stripNul(v);
    return out as T;
  }
  return value;
}

/**
 * JSON text of a value for a jsonb parameter: NUL characters (which jsonb cannot store) are
 * removed only when the text shows one (rare), instead of copying every string of every header.
 */
export function jsonWithoutNul(value: unknown): string {
  const json = JSON.stringify(value);
  // U+0000 is written as \u0000 in JSON text (a backslash followed by "u0000" only makes this take the slow path).
  return json.includes('\\u0000') ? JSON.stringify(stripNul(value)) : json;
}
