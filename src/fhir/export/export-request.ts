import type { Parameters } from '@medplum/fhirtypes';
import type { FhirDefinitions } from '../definitions';
import { compartmentParams } from '../deid/patient-links';
import { badRequest, fhirError } from '../outcome';
import { parseSearchRequest } from '../search/search-request';

/**
 * The kick-off of a FHIR Bulk Data export (Bulk Data Access IG 2.0.0, "Kick-off Request"):
 * its level, and its parameters from the query string (GET) or a Parameters body (POST),
 * checked before anything is accepted. Every problem is a 400 OperationOutcome naming it.
 */

/** Where the export starts: the whole server, all patients, or one Group's members. */
export type ExportLevel = { kind: 'system' } | { kind: 'patient' } | { kind: 'group'; groupId: string };

export interface ExportRequest {
  level: ExportLevel;
  /** Types to export (`_type`); undefined: every type the level covers that holds resources. */
  types?: string[];
  /** Only resources changed after this instant (`_since`). */
  since?: Date;
  /** Searches that narrow a type (`_typeFilter`, a union per type), as query parameters. */
  typeFilters: Map<string, Array<Record<string, string[]>>>;
  /** Elements to keep (`_elements`), per type; '*' holds the untyped ones. */
  elements?: Map<string, string[]>;
  /** Patients to export (`patient`, POST only): logical ids. */
  patients?: string[];
}

/** The NDJSON media type and the two abbreviations the IG allows for `_outputFormat`. */
const OUTPUT_FORMATS = new Set(['application/fhir+ndjson', 'application/ndjson', 'ndjson']);

/** Parameters the IG defines; any other is refused under `Prefer: handling=strict`, ignored otherwise. */
const KNOWN = new Set(['_outputFormat', '_since', '_type', '_elements', '_typeFilter', 'patient', 'includeAssociatedData', '_until']);

/** FHIR instant (a dateTime with seconds and a time zone). */
const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

/** Types a Patient or Group export covers: Patient and the types of the Patient compartment (R4 CompartmentDefinition/patient). */
export function inPatientCompartment(type: string): boolean {
  return type === 'Patient' || compartmentParams(type) !== undefined;
}

/** Reads the kick-off's parameters; `query` is the parsed query string, `body` the POST body (a Parameters resource) if any. */
export function parseExportRequest(
  defs: FhirDefinitions,
  level: ExportLevel,
  query: Record<string, string[]>,
  body: unknown,
  headers: Record<string, string | undefined>,
): ExportRequest {
  const prefer = (headers.prefer ?? '').toLowerCase();
  if (!/(^|[\s,;])respond-async($|[\s,;])/.test(prefer)) {
    throw badRequest('A bulk export runs asynchronously: send the header Prefer: respond-async');
  }
  const accept = (headers.accept ?? '').toLowerCase();
  if (/application\/(fhir\+)?xml/.test(accept) && !/json|\*\/\*/.test(accept)) {
    throw fhirError(406, 'not-supported', 'The kick-off answers in application/fhir+json only');
  }
  const strict = /handling\s*=\s*strict/.test(prefer);
  const params = body === undefined || body === null || (typeof body === 'object' && Object.keys(body as object).length === 0) ? query : mergeBody(query, body);

  for (const name of Object.keys(params)) {
    if (!KNOWN.has(name) && !name.startsWith('_format') && name !== '_pretty' && strict) throw badRequest(`Unknown export parameter ${name} (Prefer: handling=strict)`);
  }
  const single = (name: string): string | undefined => {
    const values = params[name];
    if (!values || values.length === 0) return undefined;
    if (values.length > 1) throw badRequest(`${name} may be given once`);
    return values[0];
  };

  const format = single('_outputFormat');
  if (format !== undefined && !OUTPUT_FORMATS.has(format)) {
    throw badRequest(`_outputFormat ${format} is not supported: this server exports application/fhir+ndjson`);
  }
  const request: ExportRequest = { level, typeFilters: new Map() };

  const since = single('_since');
  if (since !== undefined) {
    if (!INSTANT.test(since) || Number.isNaN(Date.parse(since))) throw badRequest(`_since must be a FHIR instant (e.g. 2026-01-02T03:04:05Z), got '${since}'`);
    request.since = new Date(since);
  }
  if (params._until?.length && strict) throw badRequest('_until is not supported');

  const typeValues = params._type;
  if (typeValues?.length) {
    const types = [...new Set(typeValues.flatMap((v) => v.split(',')).map((s) => s.trim()).filter(Boolean))];
    for (const type of types) checkType(defs, level, type);
    request.types = types;
  }

  for (const filter of params._typeFilter ?? []) {
    const q = filter.indexOf('?');
    const type = q > 0 ? filter.slice(0, q) : '';
    if (!type || q === filter.length - 1) throw badRequest(`_typeFilter must be Type?search, got '${filter}'`);
    checkType(defs, level, type);
    if (request.types && !request.types.includes(type)) throw badRequest(`_typeFilter names ${type}, which _type leaves out`);
    const search = queryOf(filter.slice(q + 1));
    // The search must be one this server runs exactly: unknown parameters are errors here.
    const parsed = parseSearchRequest(defs, type, search, { strict: true });
    if (parsed.includes.length || parsed.revincludes.length || parsed.sort.length || parsed.summary || parsed.elements) {
      throw badRequest(`_typeFilter takes search parameters only (no _include, _sort, _summary, _elements): '${filter}'`);
    }
    request.typeFilters.set(type, [...(request.typeFilters.get(type) ?? []), search]);
  }

  const elements = params._elements;
  if (elements?.length) {
    const byType = new Map<string, string[]>();
    for (const item of elements.flatMap((v) => v.split(',')).map((s) => s.trim()).filter(Boolean)) {
      const dot = item.indexOf('.');
      const [type, name] = dot > 0 ? [item.slice(0, dot), item.slice(dot + 1)] : ['*', item];
      if (type !== '*' && !defs.resourceTypes.has(type)) throw badRequest(`_elements names an unknown resource type: ${item}`);
      if (!/^[a-z][A-Za-z0-9]*$/.test(name)) throw badRequest(`_elements takes element names (Type.element or element): ${item}`);
      byType.set(type, [...(byType.get(type) ?? []), name]);
    }
    request.elements = byType;
  }

  const patients = params.patient;
  if (patients?.length) {
    if (level.kind === 'system') throw badRequest('patient applies to Patient and Group exports only');
    request.patients = [
      ...new Set(
        patients.map((ref) => {
          const m = /^(?:Patient\/)?([A-Za-z0-9\-.]{1,64})$/.exec(ref);
          if (!m) throw badRequest(`patient must reference a Patient (Patient/id), got '${ref}'`);
          return m[1];
        }),
      ),
    ];
  }
  return request;
}

function checkType(defs: FhirDefinitions, level: ExportLevel, type: string): void {
  if (!defs.resourceTypes.has(type)) throw badRequest(`Unknown resource type ${type}`);
  if (level.kind !== 'system' && !inPatientCompartment(type)) {
    throw badRequest(`${type} is not in the Patient compartment: a ${level.kind === 'group' ? 'Group' : 'Patient'} export cannot include it`);
  }
}

/** A search string as query parameters (repeated keys kept). */
function queryOf(search: string): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [k, v] of new URLSearchParams(search)) (out[k] ??= []).push(v);
  return out;
}

/** The parameters of a POST kick-off (a Parameters resource), added to those of the query string. */
function mergeBody(query: Record<string, string[]>, body: unknown): Record<string, string[]> {
  const p = body as Parameters;
  if (p?.resourceType !== 'Parameters') throw badRequest('A POST kick-off takes a Parameters resource');
  const out: Record<string, string[]> = Object.fromEntries(Object.entries(query).map(([k, v]) => [k, [...v]]));
  for (const param of p.parameter ?? []) {
    if (!param.name) throw badRequest('Each parameter needs a name');
    const value =
      param.valueString ?? param.valueInstant ?? param.valueDateTime ?? param.valueCode ?? param.valueReference?.reference ?? (param.valueBoolean !== undefined ? String(param.valueBoolean) : undefined);
    if (value === undefined) throw badRequest(`Parameter ${param.name} has no value this server reads (string, instant, code, boolean or Reference)`);
    (out[param.name] ??= []).push(value);
  }
  return out;
}

/** A kick-off as kept with its job (bulk_exports.job): JSON, so any process can run it once approved. */
export interface StoredExportJob {
  level: ExportLevel;
  types?: string[];
  since?: string;
  typeFilters: Array<[string, Array<Record<string, string[]>>]>;
  elements?: Array<[string, string[]]>;
  /** The patients the export covers (a Group's members, or `patient`), fixed at kick-off. */
  patients?: string[];
}

/** The JSON form of a checked kick-off and the patients it covers. */
export function storeExportJob(request: ExportRequest, patients: string[] | undefined): StoredExportJob {
  const stored: StoredExportJob = { level: request.level, typeFilters: [...request.typeFilters] };
  if (request.types) stored.types = request.types;
  if (request.since) stored.since = request.since.toISOString();
  if (request.elements) stored.elements = [...request.elements];
  if (patients) stored.patients = patients;
  return stored;
}

/** The kick-off a stored job holds (storeExportJob's inverse). */
export function loadExportJob(stored: StoredExportJob): { request: ExportRequest; patients?: string[] } {
  const request: ExportRequest = { level: stored.level, typeFilters: new Map(stored.typeFilters) };
  if (stored.types) request.types = stored.types;
  if (stored.since) request.since = new Date(stored.since);
  if (stored.elements) request.elements = new Map(stored.elements);
  if (stored.patients && stored.level.kind !== 'group') request.patients = stored.patients;
  return { request, patients: stored.patients };
}
