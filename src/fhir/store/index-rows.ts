import { evalFhirPathTyped, toTypedValue, type TypedValue } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import type { FhirDefinitions, SearchParamDef } from '../definitions';
import { indexText, normalizeSearchString } from '../normalize';
import { parseDateRange, toTimestamp } from '../search/date-range';
import { evaluateSimplePaths } from '../search/simple-path';

/**
 * Search-index rows of one resource, computed at write time from the R4 SearchParameter
 * FHIRPath expressions (evaluated by @medplum/core), one table per parameter type.
 */
export interface IndexRows {
  token: TokenRow[];
  string: StringRow[];
  date: DateRow[];
  number: NumberRow[];
  reference: ReferenceRow[];
  uri: UriRow[];
}
export interface TokenRow { param: string; system: string | null; code: string | null; text: string | null }
export interface StringRow { param: string; value: string; exact: string }
export interface DateRow { param: string; low: string; high: string }
export interface NumberRow { param: string; low: string | null; high: string | null; system: string | null; code: string | null }
export interface ReferenceRow { param: string; targetType: string | null; targetId: string }
export interface UriRow { param: string; value: string }

/** Parameters answered from columns of the resource table, never from index rows. */
export const COLUMN_PARAMS = new Set(['_id', '_lastUpdated']);

/** Suffix of the token rows that index `Reference.identifier` for the `:identifier` modifier. */
export const IDENTIFIER_SUFFIX = ':identifier';

/** Computes every index row of a resource. */
export function extractIndexRows(defs: FhirDefinitions, resource: Resource): IndexRows {
  defs.ensureTypeLoaded(resource.resourceType);
  const rows: IndexRows = { token: [], string: [], date: [], number: [], reference: [], uri: [] };
  const root = toTypedValue(resource);
  const variables = { '%resource': root, '%context': root, '%rootResource': root };
  for (const param of defs.searchParams(resource.resourceType).values()) {
    if (!param.parsed || COLUMN_PARAMS.has(param.code)) continue;
    if (param.rootElements && !param.rootElements.some((e) => hasElement(resource, e))) continue;
    let values: TypedValue[];
    try {
      values = param.simple ? evaluateSimplePaths(resource, param.simple) : evalFhirPathTyped(param.parsed, [root], variables);
    } catch {
      continue; // An expression our evaluator cannot run leaves the parameter unindexed for this resource.
    }
    if (values.length > 0) addRows(rows, param, values);
  }
  return dedupe(rows);
}

/** True when the resource has element `name` (or a choice `name[x]` such as valueQuantity, or its primitive extension). */
function hasElement(resource: Resource, name: string): boolean {
  const r = resource as unknown as Record<string, unknown>;
  if (r[name] !== undefined || r[`_${name}`] !== undefined) return true;
  for (const k of Object.keys(r)) if (k.length > name.length && k.startsWith(name) && k.charCodeAt(name.length) < 91 && k.charCodeAt(name.length) > 64) return true;
  return false;
}

function addRows(rows: IndexRows, param: SearchParamDef, values: TypedValue[]): void {
  const code = param.code;
  for (const tv of values) {
    const v = tv.value as any;
    if (v === undefined || v === null) continue;
    switch (param.type) {
      case 'token':
        addTokens(rows.token, code, tv);
        break;
      case 'string':
        for (const s of stringsOf(tv)) rows.string.push({ param: code, value: normalizeSearchString(s), exact: indexText(s) });
        break;
      case 'date':
        addDates(rows.date, code, tv);
        break;
      case 'number':
      case 'quantity':
        addNumbers(rows.number, code, tv);
        break;
      case 'reference':
        addReference(rows, code, tv);
        break;
      case 'uri':
        if (typeof v === 'string') rows.uri.push({ param: code, value: indexText(v) });
        break;
      default:
        break;
    }
  }
}

function typeOf(tv: TypedValue): string {
  const v = tv.value as Record<string, unknown>;
  if (tv.type && tv.type !== 'BackboneElement' && tv.type !== 'Element') return tv.type;
  if (typeof v !== 'object') return typeof v;
  if ('coding' in v) return 'CodeableConcept';
  if ('reference' in v || 'identifier' in v) return 'Reference';
  if ('start' in v || 'end' in v) return 'Period';
  if ('low' in v || 'high' in v) return 'Range';
  if ('value' in v && typeof v.value === 'number') return 'Quantity';
  if ('system' in v && 'code' in v) return 'Coding';
  return 'unknown';
}

function token(system: unknown, code: unknown, text: unknown): TokenRow | undefined {
  const s = typeof system === 'string' && system ? indexText(system) : null;
  const c = typeof code === 'string' || typeof code === 'number' || typeof code === 'boolean' ? indexText(String(code)) : null;
  const t = typeof text === 'string' && text ? normalizeSearchString(text) : null;
  if (!c && !t && !s) return undefined;
  return { param: '', system: s, code: c, text: t };
}

function addTokens(out: TokenRow[], param: string, tv: TypedValue): void {
  const v = tv.value as any;
  const push = (row: TokenRow | undefined) => row && out.push({ ...row, param });
  switch (typeOf(tv)) {
    case 'CodeableConcept': {
      const displays = new Set<string>();
      for (const c of v.coding ?? []) {
        const row = token(c.system, c.code, c.display);
        if (row?.text) displays.add(row.text);
        push(row);
      }
      // The concept's own text gets a row of its own unless a coding already carries it.
      if (v.text && !displays.has(normalizeSearchString(v.text))) push(token(null, null, v.text));
      break;
    }
    case 'Coding':
      push(token(v.system, v.code, v.display));
      break;
    case 'Identifier':
      push(token(v.system, v.value, v.type?.text));
      break;
    case 'ContactPoint':
      push(token(v.system, v.value, null));
      break;
    case 'Quantity':
    case 'Reference':
    case 'unknown':
      break;
    default:
      if (typeof v !== 'object') push(token(null, v, null));
  }
}

function stringsOf(tv: TypedValue): string[] {
  const v = tv.value as any;
  if (typeof v === 'string') return [v];
  if (typeof v !== 'object') return [];
  const type = typeOf(tv);
  const parts: string[] = [];
  const add = (x: unknown) => {
    if (typeof x === 'string' && x.trim()) parts.push(x);
    else if (Array.isArray(x)) x.forEach(add);
  };
  if (type === 'HumanName') {
    add(v.text);
    add(v.family);
    add(v.given);
    add(v.prefix);
    add(v.suffix);
    const full = [...(v.given ?? []), v.family].filter((x) => typeof x === 'string').join(' ');
    if (full && full !== v.family) parts.push(full);
  } else if (type === 'Address') {
    add(v.text);
    add(v.line);
    add(v.city);
    add(v.district);
    add(v.state);
    add(v.postalCode);
    add(v.country);
  } else if (type === 'CodeableConcept') {
    add(v.text);
    for (const c of v.coding ?? []) add(c.display);
  } else if (type === 'Coding') {
    add(v.display);
  }
  return parts;
}

function addDates(out: DateRow[], param: string, tv: TypedValue): void {
  const v = tv.value as any;
  const push = (low: number, high: number) => out.push({ param, low: toTimestamp(low), high: toTimestamp(high) });
  if (typeof v === 'string') {
    const r = parseDateRange(v);
    if (r) push(r.low, r.high);
    return;
  }
  if (typeof v !== 'object') return;
  const type = typeOf(tv);
  if (type === 'Period') {
    const start = v.start ? parseDateRange(v.start) : undefined;
    const end = v.end ? parseDateRange(v.end) : undefined;
    if (start || end) push(start?.low ?? Number.NEGATIVE_INFINITY, end?.high ?? Number.POSITIVE_INFINITY);
  } else if (type === 'Timing') {
    for (const e of v.event ?? []) {
      const r = typeof e === 'string' ? parseDateRange(e) : undefined;
      if (r) push(r.low, r.high);
    }
    const bounds = v.repeat?.boundsPeriod;
    if (bounds) addDates(out, param, { type: 'Period', value: bounds });
  }
}

function numberText(x: unknown): string | null {
  return typeof x === 'number' && Number.isFinite(x) ? String(x) : null;
}

function addNumbers(out: NumberRow[], param: string, tv: TypedValue): void {
  const v = tv.value as any;
  if (typeof v === 'number') {
    out.push({ param, low: String(v), high: String(v), system: null, code: null });
    return;
  }
  if (typeof v !== 'object') return;
  const type = typeOf(tv);
  if (type === 'Range') {
    const low = numberText(v.low?.value);
    const high = numberText(v.high?.value);
    const unit = v.low ?? v.high ?? {};
    if (low !== null || high !== null) out.push({ param, low, high, system: unit.system ?? null, code: unit.code ?? unit.unit ?? null });
    return;
  }
  const value = numberText(v.value);
  if (value === null) return;
  const system = type === 'Money' ? 'urn:iso:std:iso:4217' : (v.system ?? null);
  const code = type === 'Money' ? (v.currency ?? null) : (v.code ?? v.unit ?? null);
  out.push({ param, low: value, high: value, system, code });
  // Also findable by its display unit when the coded unit differs (FHIR R4 3.1.1.4.9).
  if (v.unit && v.code && v.unit !== v.code) out.push({ param, low: value, high: value, system: null, code: v.unit });
}

const RELATIVE_REF = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[A-Za-z0-9\-.]{1,64})?$/;

/** Splits a reference string into index form: relative 'Type/id' is typed, anything else is kept whole. */
export function parseReferenceString(ref: string): { targetType: string | null; targetId: string } | undefined {
  if (!ref || ref.startsWith('#')) return undefined;
  const m = RELATIVE_REF.exec(ref);
  if (m) return { targetType: m[1], targetId: m[2] };
  return { targetType: null, targetId: indexText(ref.split('|')[0]) };
}

function addReference(rows: IndexRows, param: string, tv: TypedValue): void {
  const v = tv.value as any;
  if (typeof v === 'string') {
    // canonical / uri targets of a reference parameter
    const parsed = parseReferenceString(v);
    if (parsed) rows.reference.push({ param, ...parsed });
    return;
  }
  if (typeof v !== 'object') return;
  if (typeof v.reference === 'string') {
    const parsed = parseReferenceString(v.reference);
    if (parsed) rows.reference.push({ param, ...parsed });
  }
  if (v.identifier && (v.identifier.value || v.identifier.system)) {
    const row = token(v.identifier.system, v.identifier.value, null);
    if (row) rows.token.push({ ...row, param: param + IDENTIFIER_SUFFIX });
  }
}

function dedupe(rows: IndexRows): IndexRows {
  const uniq = <T extends object>(list: T[]): T[] => {
    if (list.length < 2) return list;
    const seen = new Set<string>();
    return list.filter((r) => {
      const k = Object.values(r).join('\u0001');
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    });
  };
  return {
    token: uniq(rows.token),
    string: uniq(rows.string),
    date: uniq(rows.date),
    number: uniq(rows.number),
    reference: uniq(rows.reference),
    uri: uniq(rows.uri),
  };
}
