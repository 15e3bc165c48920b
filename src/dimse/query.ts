/**
 * The Query/Retrieve identifier (PS3.4 C.4.1.1.3, C.2.2): what a C-FIND asks for, as a QIDO-RS
 * search over the same index (the matching rules are the same: single value, wildcards, ranges,
 * UID lists, sequence matching, PS3.4 C.2.2.2 and PS3.18 8.3.4), and each match as a response
 * identifier holding the keys asked for. Pure code: the listener runs the searches.
 */
import type { DicomJson, DicomJsonElement } from '../dicom/types';

/** The two Query/Retrieve information models served (PS3.4 C.6.1, C.6.2). */
export type InformationModel = 'patient' | 'study';
/** Query/Retrieve Level (0008,0052). */
export type QueryLevel = 'PATIENT' | 'STUDY' | 'SERIES' | 'IMAGE';
/** A DIMSE query/retrieve operation. */
export type QueryRetrieveOperation = 'find' | 'get' | 'move';

/** The Query/Retrieve SOP Classes served (PS3.4 C.6, Table C.6-1 and C.6-2): model and operation. */
export const QUERY_RETRIEVE_SOP_CLASSES: ReadonlyMap<string, { model: InformationModel; operation: QueryRetrieveOperation }> = new Map([
  ['1.2.840.10008.5.1.4.1.2.1.1', { model: 'patient', operation: 'find' }],
  ['1.2.840.10008.5.1.4.1.2.1.2', { model: 'patient', operation: 'move' }],
  ['1.2.840.10008.5.1.4.1.2.1.3', { model: 'patient', operation: 'get' }],
  ['1.2.840.10008.5.1.4.1.2.2.1', { model: 'study', operation: 'find' }],
  ['1.2.840.10008.5.1.4.1.2.2.2', { model: 'study', operation: 'move' }],
  ['1.2.840.10008.5.1.4.1.2.2.3', { model: 'study', operation: 'get' }],
] as const);

const QUERY_RETRIEVE_LEVEL = '00080052';
const SPECIFIC_CHARACTER_SET = '00080005';
const RETRIEVE_AE_TITLE = '00080054';
const INSTANCE_AVAILABILITY = '00080056';
const NUMBER_OF_PATIENT_RELATED_STUDIES = '00201200';
const PATIENT_ID = '00100020';
const ISSUER_OF_PATIENT_ID = '00100021';
const STUDY_INSTANCE_UID = '0020000D';
const SERIES_INSTANCE_UID = '0020000E';
const SOP_INSTANCE_UID = '00080018';

/** Attributes of the Patient level (PS3.4 C.6.1.1.2, Table C.6-1), the ones a patient search keeps. */
const PATIENT_LEVEL_TAGS = new Set(['00100010', PATIENT_ID, ISSUER_OF_PATIENT_ID, '00100030', '00100040', '00101000', '00101001', '00102160', '00104000', '00100032']);

/** Levels each model has, top down. */
const LEVELS: Record<InformationModel, readonly QueryLevel[]> = {
  patient: ['PATIENT', 'STUDY', 'SERIES', 'IMAGE'],
  study: ['STUDY', 'SERIES', 'IMAGE'],
};

/** An identifier the model cannot answer: the C-FIND/C-GET/C-MOVE failure status and its Error Comment. */
export class IdentifierError extends Error {
  constructor(
    /** 0xA900 Identifier does not match SOP Class, 0xC000 unable to process. */
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'IdentifierError';
  }
}

/** One key of a request identifier: its tag and VR (the value comes back in each response). */
export interface RequestedKey {
  tag: string;
  vr: string;
}

/** A C-FIND identifier turned into a search. */
export interface ParsedQuery {
  level: QueryLevel;
  /** QIDO-RS query parameters (match keys by tag, `includefield` for the return keys). */
  query: Record<string, string | string[]>;
  /** The top-level keys of the identifier, in order; each response holds them. */
  keys: RequestedKey[];
  /** The query as text, for the audit trail (`PatientID=123&StudyDate=2024*`). */
  text: string;
}

/** The Query/Retrieve Level of an identifier, checked against the model. */
function levelOf(model: InformationModel, identifier: DicomJson): QueryLevel {
  const value = firstText(identifier[QUERY_RETRIEVE_LEVEL])?.trim().toUpperCase();
  if (!value) throw new IdentifierError(0xa900, 'Query/Retrieve Level (0008,0052) is missing');
  if (!(LEVELS[model] as readonly string[]).includes(value)) {
    throw new IdentifierError(0xa900, `Query/Retrieve Level ${value} is not one of the ${model} root model (${LEVELS[model].join(', ')})`);
  }
  return value as QueryLevel;
}

/**
 * A C-FIND identifier as a QIDO-RS search. Elements with a value are match keys, empty ones (and
 * the universal `*`) return keys; sequence items with values match inside the sequence
 * (PS3.4 C.2.2.2.6). Matching is hierarchical or relational alike: keys of higher levels narrow
 * the search wherever the index has them (PS3.4 C.4.1.2.2/C.4.1.2.3 answer the same matches
 * when the unique keys are given).
 */
export function parseFindIdentifier(model: InformationModel, identifier: DicomJson): ParsedQuery {
  const level = levelOf(model, identifier);
  const query: Record<string, string | string[]> = {};
  const includes: string[] = [];
  const keys: RequestedKey[] = [];
  const text: string[] = [];
  for (const tag of Object.keys(identifier).sort()) {
    if (tag === QUERY_RETRIEVE_LEVEL || tag === SPECIFIC_CHARACTER_SET) continue;
    if (!/^[0-9A-F]{8}$/.test(tag) || isGroupLength(tag) || isPrivate(tag)) continue;
    const element = identifier[tag];
    keys.push({ tag, vr: element.vr });
    if (tag === RETRIEVE_AE_TITLE || tag === INSTANCE_AVAILABILITY || tag === NUMBER_OF_PATIENT_RELATED_STUDIES) continue;
    if (element.vr === 'SQ') {
      includes.push(tag);
      const item = (element.Value?.[0] ?? undefined) as DicomJson | undefined;
      for (const [sub, subElement] of Object.entries(item ?? {})) {
        const value = matchText(subElement);
        if (value === undefined || !/^[0-9A-F]{8}$/.test(sub)) continue;
        query[`${tag}.${sub}`] = value;
        text.push(`${tag}.${sub}=${value}`);
      }
      continue;
    }
    const value = matchText(element);
    if (value === undefined) includes.push(tag);
    else {
      query[tag] = value;
      text.push(`${tag}=${value}`);
    }
  }
  if (includes.length > 0) query.includefield = includes.join(',');
  return { level, query, keys, text: `${level}?${text.join('&')}` };
}

/**
 * The Patient level of the Patient Root model answered from a study search: the study query
 * keeps the patient keys, and studies are grouped by patient (PatientID with its issuer).
 */
export function patientSearchOf(parsed: ParsedQuery): Record<string, string | string[]> {
  const query: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(parsed.query)) {
    if (name === 'includefield') continue;
    if (PATIENT_LEVEL_TAGS.has(name.split('.')[0])) query[name] = value;
  }
  const includes = parsed.keys.map((k) => k.tag).filter((t) => PATIENT_LEVEL_TAGS.has(t));
  query.includefield = [...new Set([...includes, PATIENT_ID, ISSUER_OF_PATIENT_ID])].join(',');
  return query;
}

/** The patient a study result belongs to, as a grouping key. */
export function patientKeyOf(result: DicomJson): string {
  return JSON.stringify([firstText(result[PATIENT_ID]) ?? '', firstText(result[ISSUER_OF_PATIENT_ID]) ?? '']);
}

/**
 * A C-FIND response identifier (PS3.4 C.4.1.1.3.2): the Query/Retrieve Level, and every key of the
 * request with the match's value, or empty when the match has none (a key not supported is
 * returned empty). Retrieve AE Title names this server; Specific Character Set is given when the
 * match has one. `extra` supplies computed keys (Number of Patient Related Studies).
 */
export function responseIdentifier(
  level: QueryLevel,
  keys: readonly RequestedKey[],
  match: DicomJson,
  aeTitle: string,
  extra: Record<string, DicomJsonElement> = {},
): DicomJson {
  const out: DicomJson = {};
  const charset = match[SPECIFIC_CHARACTER_SET];
  if (charset?.Value && charset.Value.length > 0) out[SPECIFIC_CHARACTER_SET] = { vr: 'CS', Value: charset.Value };
  out[QUERY_RETRIEVE_LEVEL] = { vr: 'CS', Value: [level] };
  for (const { tag, vr } of keys) {
    if (tag === RETRIEVE_AE_TITLE) continue;
    const found = extra[tag] ?? match[tag];
    if (found && !found.BulkDataURI && !found.InlineBinary) out[tag] = found.Value !== undefined ? { vr: found.vr, Value: found.Value } : { vr: found.vr };
    else out[tag] = { vr };
  }
  out[RETRIEVE_AE_TITLE] = { vr: 'AE', Value: [aeTitle] };
  return out;
}

/**
 * What a C-GET or C-MOVE identifier names (PS3.4 C.4.2.1.4, C.4.3.1.3): the unique keys of its
 * level and above. Lists of UIDs are allowed at the level retrieved (PS3.4 C.4.2.2.1).
 */
export interface RetrieveKeys {
  level: QueryLevel;
  patientID?: string;
  issuerOfPatientID?: string;
  studyInstanceUIDs: string[];
  seriesInstanceUIDs: string[];
  sopInstanceUIDs: string[];
}

/** The unique keys of a C-GET/C-MOVE identifier, with the ones its level requires present. */
export function parseRetrieveIdentifier(model: InformationModel, identifier: DicomJson): RetrieveKeys {
  const level = levelOf(model, identifier);
  const keys: RetrieveKeys = {
    level,
    patientID: firstText(identifier[PATIENT_ID])?.trim() || undefined,
    issuerOfPatientID: firstText(identifier[ISSUER_OF_PATIENT_ID])?.trim() || undefined,
    studyInstanceUIDs: uidList(identifier[STUDY_INSTANCE_UID]),
    seriesInstanceUIDs: uidList(identifier[SERIES_INSTANCE_UID]),
    sopInstanceUIDs: uidList(identifier[SOP_INSTANCE_UID]),
  };
  const need = (present: boolean, what: string) => {
    if (!present) throw new IdentifierError(0xa900, `a ${level} level retrieve needs ${what}`);
  };
  if (level === 'PATIENT') need(keys.patientID !== undefined, 'Patient ID (0010,0020)');
  if (level === 'STUDY') need(keys.studyInstanceUIDs.length > 0, 'Study Instance UID (0020,000D)');
  if (level === 'SERIES') need(keys.seriesInstanceUIDs.length > 0, 'Series Instance UID (0020,000E)');
  if (level === 'IMAGE') need(keys.sopInstanceUIDs.length > 0, 'SOP Instance UID (0008,0018)');
  for (const uid of [...keys.studyInstanceUIDs, ...keys.seriesInstanceUIDs, ...keys.sopInstanceUIDs]) {
    if (!/^[0-9.]{1,64}$/.test(uid)) throw new IdentifierError(0xa900, `"${uid.slice(0, 70)}" is not a UID`);
  }
  return keys;
}

/** The value of a match key as QIDO-RS text, or undefined for a return key (empty or universal). */
function matchText(element: DicomJsonElement): string | undefined {
  if (element.vr === 'SQ' || element.BulkDataURI || element.InlineBinary) return undefined;
  const values = (element.Value ?? []).map(valueText).filter((v) => v !== '');
  if (values.length === 0) return undefined;
  const joined = values.join('\\');
  if (joined === '*') return undefined;
  return joined;
}

function valueText(value: unknown): string {
  if (value === null || value === undefined) return '';
  if (typeof value === 'object') return String((value as { Alphabetic?: unknown }).Alphabetic ?? '').trim();
  return String(value).trim();
}

function firstText(element: DicomJsonElement | undefined): string | undefined {
  const v = element?.Value?.[0];
  return v === undefined ? undefined : valueText(v);
}

function uidList(element: DicomJsonElement | undefined): string[] {
  return (element?.Value ?? [])
    .flatMap((v) => valueText(v).split('\\'))
    .map((v) => v.replace(/\0/g, '').trim())
    .filter((v) => v !== '');
}

function isGroupLength(tag: string): boolean {
  return tag.endsWith('0000');
}

function isPrivate(tag: string): boolean {
  return parseInt(tag.slice(3, 4), 16) % 2 === 1;
}
