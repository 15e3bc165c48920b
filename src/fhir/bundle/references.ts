/**
 * Reference rewriting inside a transaction Bundle (FHIR R4 http 3.1.0.11.2): references to
 * another entry's fullUrl (urn:uuid:..., urn:oid:... or an absolute URL) and conditional
 * references ('Patient?identifier=...') are replaced by the logical 'Type/id' the server assigned.
 */

/** True for a conditional reference: a resource type followed by a query. */
export function isConditionalReference(ref: string): boolean {
  return /^[A-Z][A-Za-z]+\?.+/.test(ref);
}

/** Every `reference` string in a value (walks objects and arrays). */
export function collectReferences(value: unknown, out: Set<string> = new Set()): Set<string> {
  if (Array.isArray(value)) {
    for (const v of value) collectReferences(v, out);
  } else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === 'reference' && typeof v === 'string') out.add(v);
      else if (v && typeof v === 'object') collectReferences(v, out);
    }
  }
  return out;
}

/**
 * Returns a copy of `value` with every `reference` property replaced through `map` (exact
 * string match). References the map does not know are kept. Identifier values that happen to
 * look like a fullUrl are deliberately left alone.
 */
export function rewriteReferences<T>(value: T, map: ReadonlyMap<string, string>): T {
  const walk = (v: unknown, key?: string): unknown => {
    if (typeof v === 'string') {
      return key === 'reference' ? (map.get(v) ?? v) : v;
    }
    if (Array.isArray(v)) return v.map((x) => walk(x, key));
    if (v && typeof v === 'object') {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) out[k] = walk(x, k);
      return out;
    }
    return v;
  };
  return walk(value) as T;
}
