/**
 * Reference rewriting inside a transaction Bundle (FHIR R4 http 3.1.0.11.2): references to
 * another entry's fullUrl (urn:uuid:..., urn:oid:... or an absolute URL) and conditional
 * references ('Patient?identifier=...') are replaced by the logical 'Type/id' the server assigned.
 * A resource is walked once ({@link findReferences}); rewriting then copies only the objects on
 * the way to a changed reference, so an ingest does not copy every resource it writes.
 */

/** True for a conditional reference: a resource type followed by a query. */
export function isConditionalReference(ref: string): boolean {
  return /^[A-Z][A-Za-z]+\?.+/.test(ref);
}

/** One `reference` string in a value, with the keys and indexes that lead to the object holding it. */
export interface ReferenceSite {
  path: ReadonlyArray<string | number>;
  reference: string;
}

/** Every `reference` string in a value (walks objects and arrays once). */
export function findReferences(value: unknown): ReferenceSite[] {
  const sites: ReferenceSite[] = [];
  const path: Array<string | number> = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const x = v[i];
        if (x && typeof x === 'object') {
          path.push(i);
          walk(x);
          path.pop();
        }
      }
      return;
    }
    const o = v as Record<string, unknown>;
    for (const k in o) {
      const x = o[k];
      if (k === 'reference' && typeof x === 'string') sites.push({ path: [...path], reference: x });
      else if (x && typeof x === 'object') {
        path.push(k);
        walk(x);
        path.pop();
      }
    }
  };
  if (value && typeof value === 'object') walk(value);
  return sites;
}

/** Every `reference` string in a value (walks objects and arrays). */
export function collectReferences(value: unknown, out: Set<string> = new Set()): Set<string> {
  for (const s of findReferences(value)) out.add(s.reference);
  return out;
}

/**
 * Returns `value` with every reference at `sites` that `map` knows replaced (exact string match),
 * never mutating the input: the objects and arrays on the way to a replaced reference are copied,
 * the rest is shared; `value` itself comes back when nothing changes.
 */
export function rewriteReferenceSites<T>(value: T, sites: readonly ReferenceSite[], map: ReadonlyMap<string, string>): T {
  let root = value as unknown;
  const copies = new Set<unknown>();
  const copyOf = (v: unknown): Record<string | number, unknown> => {
    if (copies.has(v)) return v as Record<string | number, unknown>;
    const c = Array.isArray(v) ? [...v] : { ...(v as object) };
    copies.add(c);
    return c as Record<string | number, unknown>;
  };
  for (const site of sites) {
    const target = map.get(site.reference);
    if (target === undefined || target === site.reference) continue;
    root = copyOf(root);
    let parent = root as Record<string | number, unknown>;
    for (const key of site.path) {
      const child = copyOf(parent[key]);
      parent[key] = child;
      parent = child;
    }
    parent.reference = target;
  }
  return root as T;
}

/**
 * Returns a copy of `value` with every `reference` property replaced through `map` (exact
 * string match). References the map does not know are kept. Identifier values that happen to
 * look like a fullUrl are deliberately left alone.
 */
export function rewriteReferences<T>(value: T, map: ReadonlyMap<string, string>): T {
  return rewriteReferenceSites(value, findReferences(value), map);
}
