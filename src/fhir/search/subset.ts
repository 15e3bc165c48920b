import type { Resource } from '@medplum/fhirtypes';
import type { FhirDefinitions } from '../definitions';

/** The tag a server puts on a resource it returns incompletely (FHIR R4 3.1.1.5.7/8). */
export const SUBSETTED = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED', display: 'subsetted' };

function keep(resource: Resource, names: ReadonlySet<string>): Resource {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(resource)) {
    if (k === 'resourceType' || k === 'id' || k === 'meta' || names.has(k) || names.has(k.replace(/^_/, ''))) out[k] = v;
  }
  const meta = (resource.meta ?? {}) as NonNullable<Resource['meta']>;
  out.meta = { ...meta, tag: [...(meta.tag ?? []).filter((t) => t.code !== SUBSETTED.code), SUBSETTED] };
  return out as unknown as Resource;
}

/** Applies `_elements` (top-level element names; choice elements by their base name). */
export function applyElements(resource: Resource, elements: string[]): Resource {
  const names = new Set<string>();
  for (const e of elements) {
    names.add(e);
    for (const k of Object.keys(resource)) if (k.startsWith(e) && /^[A-Z]/.test(k.slice(e.length))) names.add(k);
  }
  return keep(resource, names);
}

/** Applies `_summary=true|text|data` (R4 3.1.1.5.8). */
export function applySummary(defs: FhirDefinitions, resource: Resource, summary: 'true' | 'text' | 'data'): Resource {
  if (summary === 'data') {
    const { text: _text, ...rest } = resource as Resource & { text?: unknown };
    return keep(rest as Resource, new Set(Object.keys(rest)));
  }
  if (summary === 'text') return keep(resource, new Set(['text']));
  const summaryNames = defs.summaryElements(resource.resourceType);
  const names = new Set<string>();
  for (const k of Object.keys(resource)) {
    const base = k.replace(/^_/, '');
    if (summaryNames.has(base) || [...summaryNames].some((s) => base.startsWith(s) && /^[A-Z]/.test(base.slice(s.length)))) names.add(k);
  }
  return keep(resource, names);
}
