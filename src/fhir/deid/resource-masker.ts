import { tryGetDataType, type InternalTypeSchema } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import type { FhirDefinitions } from '../definitions';
import { ageInYears, shiftFhirDate } from './date-shift';

/**
 * The de-identified view of one resource (HIPAA 164.514(b)(2) safe harbour; the FHIR side of
 * PS3.15 Annex E): a walk over the resource driven by its StructureDefinition element types, so
 * every element of every type is decided by what it is, not by a hand list of paths:
 *
 * - removed: Identifier (all systems; Patient and ImagingStudy get theirs back below),
 *   HumanName, Address, ContactPoint, Attachment, Signature, Annotation (notes), Narrative
 *   (text.div), Extension (extension, modifierExtension: none is known safe by default),
 *   base64Binary, every `string` and `markdown` (free text: CodeableConcept.text,
 *   Reference.display, descriptions, ...) except Coding.display/version (from the code system),
 *   Quantity.unit, Reference.reference and Group.name (a cohort label), primitive extensions (`_x`), and elements the
 *   definitions do not know;
 * - shifted: every date, dateTime and instant (Period, meta.lastUpdated, ...) of a patient-linked
 *   resource by its patient's offset (date-shift.ts); removed when the offset is unknown;
 * - kept: codes, Codings, numbers, booleans, uris, ids, references (ids are random server ids).
 */

/** What the view of one resource needs to know. */
export interface MaskInput {
  /** True when the resource is about a patient (Patient, or in its compartment). */
  linked: boolean;
  /** The patient's date offset; undefined for a linked resource hides its dates. */
  offsetDays?: number;
  /** The patient's pseudonym (Patient resources). */
  patientKey?: string;
  /** Maps DICOM UIDs for the project the caller sees the study through (ImagingStudy). */
  mapUid?: (uid: string) => string;
  /** "Now", for the over-89 rule. */
  now: Date;
}

/** Patient.identifier of a de-identified Patient: its PatientKey. */
export const PATIENT_KEY_SYSTEM = 'urn:imaging-lake:patient-key';
/** The identifier system of DICOM Study Instance UIDs on ImagingStudy (FHIR R4 ImagingStudy notes). */
export const DICOM_UID_SYSTEM = 'urn:dicom:uid';
/** Security label of every de-identified resource (v3 ObservationValue PSEUDED). */
export const PSEUDONYMIZED = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'PSEUDED', display: 'pseudonymized' };
const DATA_ABSENT_REASON = 'http://hl7.org/fhir/StructureDefinition/data-absent-reason';

const REMOVED_TYPES = new Set(['Identifier', 'HumanName', 'Address', 'ContactPoint', 'Attachment', 'Signature', 'Annotation', 'Narrative', 'Extension', 'xhtml', 'base64Binary']);
const DATE_TYPES = new Set(['date', 'dateTime', 'instant']);
const KEPT_PRIMITIVES = new Set(['boolean', 'integer', 'decimal', 'positiveInt', 'unsignedInt', 'code', 'id', 'uri', 'url', 'canonical', 'oid', 'uuid', 'time']);
const QUANTITIES = new Set(['Quantity', 'Age', 'Count', 'Distance', 'Duration', 'MoneyQuantity', 'SimpleQuantity']);
/** Strings that are not free text: the code system's display, units, and reference targets. */
function keptString(parentType: string, key: string): boolean {
  if (parentType === 'Coding') return key === 'display' || key === 'version';
  // A cohort's label is how researchers find their own cohorts (Group search by name), not patient text.
  if (parentType === 'Group') return key === 'name';
  if (parentType === 'Reference') return key === 'reference';
  if (QUANTITIES.has(parentType)) return key === 'unit';
  return false;
}

interface WalkState extends MaskInput {
  defs: FhirDefinitions;
}

/** The de-identified copy of `resource` (the input is not changed). */
export function maskResource(defs: FhirDefinitions, resource: Resource, input: MaskInput): Resource {
  const state: WalkState = { ...input, defs };
  const out = walkResource(resource as unknown as Record<string, unknown>, state);
  if (!out) return { resourceType: resource.resourceType, id: resource.id } as Resource;
  if (resource.resourceType === 'Patient') finishPatient(resource as unknown as Record<string, unknown>, out, input);
  if (resource.resourceType === 'ImagingStudy') finishImagingStudy(resource as unknown as Record<string, unknown>, out, input);
  const meta = (out.meta ?? {}) as { security?: Array<{ system?: string; code?: string }> };
  out.meta = { ...meta, security: [...(meta.security ?? []).filter((s) => s.code !== PSEUDONYMIZED.code), PSEUDONYMIZED] };
  return orderKeys(out) as unknown as Resource;
}

function walkResource(resource: Record<string, unknown>, state: WalkState): Record<string, unknown> | undefined {
  const type = resource?.resourceType;
  if (typeof type !== 'string' || !state.defs.resourceTypes.has(type)) return undefined;
  state.defs.ensureTypeLoaded(type);
  const schema = tryGetDataType(type);
  if (!schema) return undefined;
  const out = walkObject(resource, schema, schema, state, true);
  out.resourceType = type;
  return out;
}

function walkObject(obj: Record<string, unknown>, schema: InternalTypeSchema, root: InternalTypeSchema, state: WalkState, isResource = false): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(obj)) {
    if (key.startsWith('_') || key === 'resourceType') continue;
    if (isResource && key === 'id') {
      if (typeof value === 'string') out.id = value;
      continue;
    }
    const typeCode = elementType(schema, key);
    if (!typeCode) continue;
    const mapped = Array.isArray(value)
      ? value.map((v) => mapValue(v, typeCode, schema.name, key, root, state)).filter((v) => v !== undefined)
      : mapValue(value, typeCode, schema.name, key, root, state);
    if (mapped === undefined || (Array.isArray(mapped) && mapped.length === 0)) continue;
    out[key] = mapped;
  }
  return out;
}

const typeCache = new WeakMap<InternalTypeSchema, Map<string, string | undefined>>();

/** The type of the JSON key `key` of `schema`: a plain element, or one type of a choice element. */
function elementType(schema: InternalTypeSchema, key: string): string | undefined {
  let cache = typeCache.get(schema);
  if (!cache) typeCache.set(schema, (cache = new Map()));
  if (cache.has(key)) return cache.get(key);
  const t = findElementType(schema, key);
  if (cache.size < 1000) cache.set(key, t);
  return t;
}

function findElementType(schema: InternalTypeSchema, key: string): string | undefined {
  const el = schema.elements[key];
  if (el) return el.type.length === 1 ? el.type[0].code : undefined;
  for (const [name, choice] of Object.entries(schema.elements)) {
    if (!name.endsWith('[x]')) continue;
    const base = name.slice(0, -3);
    if (!key.startsWith(base)) continue;
    const suffix = key.slice(base.length);
    const t = choice.type.find((x) => x.code.charAt(0).toUpperCase() + x.code.slice(1) === suffix);
    if (t) return t.code;
  }
  return undefined;
}

function mapValue(value: unknown, typeCode: string, parentType: string, key: string, root: InternalTypeSchema, state: WalkState): unknown {
  if (value === null || value === undefined) return undefined;
  if (REMOVED_TYPES.has(typeCode)) return undefined;
  if (DATE_TYPES.has(typeCode)) {
    if (typeof value !== 'string') return undefined;
    if (!state.linked) return value;
    return state.offsetDays === undefined ? undefined : shiftFhirDate(value, state.offsetDays);
  }
  if (typeCode === 'string' || typeCode === 'markdown') return typeof value === 'string' && keptString(parentType, key) ? value : undefined;
  if (KEPT_PRIMITIVES.has(typeCode)) return typeof value === 'object' ? undefined : value;
  if (typeCode.startsWith('http://hl7.org/fhirpath/')) return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) return undefined;
  if (typeCode === 'Resource') return walkResource(value as Record<string, unknown>, state);
  const inner = root.innerTypes.find((t) => t.name === typeCode);
  const schema = inner ?? tryGetDataType(typeCode);
  if (!schema) return undefined;
  const out = walkObject(value as Record<string, unknown>, schema, inner ? root : schema, state);
  return Object.keys(out).length > 0 ? out : undefined;
}

/** Patient: PatientKey as the only identifier, no contact, and birthDate suppressed over 89. */
function finishPatient(original: Record<string, unknown>, out: Record<string, unknown>, input: MaskInput): void {
  delete out.contact;
  const subsetted = isSubsetted(original);
  if (input.patientKey && (!subsetted || 'identifier' in original)) out.identifier = [{ system: PATIENT_KEY_SYSTEM, value: input.patientKey }];
  const real = typeof original.birthDate === 'string' ? original.birthDate : undefined;
  if (real !== undefined) {
    const shifted = typeof out.birthDate === 'string' ? out.birthDate : undefined;
    const ages = [ageInYears(real, input.now), shifted ? ageInYears(shifted, input.now) : undefined];
    if (shifted === undefined || ages.some((a) => a === undefined || a > 89)) {
      // HIPAA safe harbour: ages over 89 are 90+; the birth year would imply it.
      delete out.birthDate;
      out._birthDate = { extension: [{ url: DATA_ABSENT_REASON, valueCode: 'masked' }] };
    }
  }
}

/** ImagingStudy: the Study Instance UID identifier and series/instance UIDs mapped for the project; nothing else identifies it. */
function finishImagingStudy(original: Record<string, unknown>, out: Record<string, unknown>, input: MaskInput): void {
  const map = input.mapUid;
  const ids = Array.isArray(original.identifier) ? (original.identifier as Array<{ system?: string; value?: string }>) : [];
  const studyUid = ids.find((i) => i?.system === DICOM_UID_SYSTEM && typeof i.value === 'string')?.value?.replace(/^urn:oid:/, '');
  if (map && studyUid) out.identifier = [{ use: 'official', system: DICOM_UID_SYSTEM, value: `urn:oid:${map(studyUid)}` }];
  const series = Array.isArray(out.series) ? (out.series as Array<Record<string, unknown>>) : [];
  for (const s of series) {
    if (typeof s.uid === 'string' && map) s.uid = map(s.uid);
    else delete s.uid;
    for (const i of Array.isArray(s.instance) ? (s.instance as Array<Record<string, unknown>>) : []) {
      if (typeof i.uid === 'string' && map) i.uid = map(i.uid);
      else delete i.uid;
    }
  }
}

function isSubsetted(resource: Record<string, unknown>): boolean {
  const tags = (resource.meta as { tag?: Array<{ code?: string }> } | undefined)?.tag ?? [];
  return tags.some((t) => t?.code === 'SUBSETTED');
}

/** resourceType, id and meta first, as FHIR JSON is conventionally written. */
function orderKeys(out: Record<string, unknown>): Record<string, unknown> {
  const { resourceType, id, meta, ...rest } = out;
  return { resourceType, ...(id !== undefined ? { id } : {}), ...(meta !== undefined ? { meta } : {}), ...rest };
}
