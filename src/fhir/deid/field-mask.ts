import type { Coding, Resource } from '@medplum/fhirtypes';
import type { FhirResponse } from '../http/fhir-request';
import { fhirError } from '../outcome';
import { transformAnswerWith } from './deid-view';
import { MASKED_VALUE, type FieldRules } from '../../auth/policy-fields';

/**
 * Column-level policy for callers who see identified data with some elements withheld (a data
 * manager sees patient identifiers, telecom and addresses masked: they are the admin's alone).
 * The policy layer says which top-level elements of each type are masked or hidden
 * (src/auth/policy-fields.ts); this applies it to every resource of every answer, and keeps the
 * stored values when such a caller writes a resource back as it read it, so a read-modify-write
 * never replaces an identifier with its mask.
 *
 * Masks keep an element's shape and coding (an identifier's system and type, a telecom's system
 * and use, an address's use and type) and replace its values with `***`. DICOM UIDs
 * (`urn:dicom:uid` identifiers) are technical names of stored objects, not identifiers of a
 * person: they stay. The resource is labelled REDACTED in meta.security.
 */

export type { FieldRules } from '../../auth/policy-fields';

export interface FieldMask {
  /** The answer with each resource masked. */
  transformAnswer(answer: FhirResponse): Promise<FhirResponse>;
  /** `incoming` with the stored value put back where it carries the mask (or leaves the element out). */
  keepStored(incoming: Resource, stored: Resource | null | undefined): Resource;
}

const MASK = MASKED_VALUE;
const REDACTED: Coding = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'REDACTED', display: 'redacted' };

export function createFieldMask(rulesFor: (resourceType: string) => FieldRules): FieldMask {
  const topLevel = (paths: readonly string[]) => paths.filter((p) => !p.includes('.'));
  const mask = (resource: Resource): Resource => {
    const rules = rulesFor(resource.resourceType);
    const masked = topLevel(rules.masked);
    const hidden = topLevel(rules.hidden);
    const source = resource as unknown as Record<string, unknown>;
    if (![...masked, ...hidden].some((p) => source[p] !== undefined)) return resource;
    const out: Record<string, unknown> = { ...source };
    for (const p of hidden) delete out[p];
    for (const p of masked) if (out[p] !== undefined) out[p] = maskElement(p, out[p]);
    const meta = (out.meta ?? {}) as Resource['meta'] & object;
    out.meta = { ...meta, security: [...(meta.security ?? []).filter((c) => c.code !== REDACTED.code), REDACTED] };
    return out as unknown as Resource;
  };
  return {
    // Dates are not shifted in this view: Last-Modified stays.
    transformAnswer: async (answer) => ({ ...(await transformAnswerWith(answer, async (resources) => resources.map(mask))), headers: answer.headers }),
    keepStored(incoming, stored) {
      if (!stored) return incoming;
      const rules = rulesFor(incoming.resourceType);
      const kept = [...topLevel(rules.masked), ...topLevel(rules.hidden)];
      const source = stored as unknown as Record<string, unknown>;
      const out: Record<string, unknown> = { ...(incoming as unknown as Record<string, unknown>) };
      for (const p of kept) {
        if (source[p] === undefined) continue;
        if (out[p] === undefined) {
          out[p] = source[p];
          continue;
        }
        if (rules.hidden.includes(p)) continue;
        out[p] = restoreMasked(p, out[p], source[p]);
        if (JSON.stringify(out[p]).includes(`"${MASK}"`)) {
          throw fhirError(422, 'business-rule', `${incoming.resourceType}.${p}: a masked element was sent back changed; send it as read, or with its full new value`, [`${incoming.resourceType}.${p}`]);
        }
      }
      const meta = out.meta as Resource['meta'] | undefined;
      if (meta?.security?.some((c) => c.code === REDACTED.code)) {
        const security = meta.security.filter((c) => c.code !== REDACTED.code);
        out.meta = { ...meta, security: security.length ? security : undefined };
      }
      return out as unknown as Resource;
    },
  };
}

/**
 * `incoming` with each element that equals the mask of a stored element replaced by that stored
 * element (arrays element by element, so a data manager may add an identifier beside a masked one).
 */
function restoreMasked(path: string, incoming: unknown, stored: unknown): unknown {
  if (!Array.isArray(incoming) || !Array.isArray(stored)) {
    return JSON.stringify(incoming) === JSON.stringify(maskElement(path, stored)) ? stored : incoming;
  }
  const unused = stored.map((el) => ({ el, masked: JSON.stringify(maskOne(path, el)) }));
  let changed = false;
  const out = incoming.map((el) => {
    const text = JSON.stringify(el);
    const i = unused.findIndex((u) => u.masked === text);
    if (i < 0) return el;
    changed = true;
    return unused.splice(i, 1)[0].el;
  });
  return changed ? out : incoming;
}

/** One element (an array or a value) with its values replaced by the mask. */
function maskElement(path: string, value: unknown): unknown {
  if (Array.isArray(value)) return value.map((v) => maskOne(path, v));
  return maskOne(path, value);
}

function maskOne(path: string, value: unknown): unknown {
  if (!value || typeof value !== 'object') return MASK;
  const v = value as Record<string, unknown>;
  switch (path) {
    case 'identifier':
      if (v.system === 'urn:dicom:uid') return value;
      return pick(v, ['use', 'type', 'system'], { value: MASK });
    case 'telecom':
      return pick(v, ['system', 'use'], { value: MASK });
    case 'address':
      return pick(v, ['use', 'type'], { text: MASK });
    case 'contact':
      return pick(v, ['relationship'], { name: { text: MASK } });
    default:
      return MASK;
  }
}

function pick(v: Record<string, unknown>, keys: string[], extra: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of keys) if (v[k] !== undefined) out[k] = v[k];
  return { ...out, ...extra };
}
