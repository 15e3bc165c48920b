import type { TypedValue } from '@medplum/core';
import type { StructureDefinition } from '@medplum/fhirtypes';

/**
 * A fast path for the SearchParameter expressions that are plain navigation — `Patient.name`,
 * `(Observation.value as Quantity)`, `Observation.subject.where(resolve() is Patient)`,
 * `Patient.telecom.where(system='phone')` — which are most of R4's. They are compiled once,
 * with the element type taken from the StructureDefinitions, and evaluated on the JSON directly,
 * giving the same values as FHIRPath. Anything else (functions, unions of casts without a type,
 * extensions, ...) stays with the full FHIRPath engine.
 */
export interface SimplePath {
  /** JSON keys to follow from the resource, in order. */
  keys: string[];
  /** FHIR type of the values reached. */
  type: string;
  filter?: { kind: 'resolve-is'; type: string } | { kind: 'equals'; field: string; value: string };
}

/** Looks up an element of a type: its type codes, or the path it borrows its definition from. */
export type ElementLookup = (typeName: string, path: string) => { types: string[]; contentReference?: string } | undefined;

const PRIMITIVES = new Set([
  'boolean', 'integer', 'string', 'decimal', 'uri', 'url', 'canonical', 'base64Binary', 'instant', 'date', 'dateTime', 'time',
  'code', 'oid', 'id', 'markdown', 'unsignedInt', 'positiveInt', 'uuid', 'xhtml',
]);

/** Compiles every branch of a union expression, or returns undefined when one is not plain navigation. */
export function compileSimpleExpression(rt: string, expression: string, lookup: ElementLookup): SimplePath[] | undefined {
  const branches = splitUnion(expression);
  const out: SimplePath[] = [];
  for (const raw of branches) {
    let branch = stripParens(raw.trim());
    // `x.as(Type)` is the function form of `x as Type`.
    branch = branch.replace(/^(.+)\.as\(([A-Za-z]+)\)$/, '$1 as $2');
    const p = compileBranch(rt, branch, lookup);
    if (p) {
      out.push(p);
      continue;
    }
    // A choice element without a cast (Observation.effective) is every one of its types.
    const choice = /^([A-Z][A-Za-z]*(?:\.[a-z][A-Za-z0-9]*)+)$/.exec(branch);
    const el = choice && choiceElement(rt, branch, lookup);
    if (!el) return undefined;
    for (const t of el) {
      const typed = compileBranch(rt, `${branch} as ${t}`, lookup);
      if (!typed) return undefined;
      out.push(typed);
    }
  }
  return out;
}

/** The types of the choice element a plain path ends on (only for paths inside the resource's own elements). */
function choiceElement(rt: string, path: string, lookup: ElementLookup): string[] | undefined {
  const el = lookup(rt, `${path}[x]`);
  return el && el.types.length > 0 ? el.types : undefined;
}

function stripParens(s: string): string {
  while (s.startsWith('(') && s.endsWith(')') && balanced(s.slice(1, -1))) s = s.slice(1, -1).trim();
  return s;
}

function balanced(s: string): boolean {
  let depth = 0;
  for (const c of s) {
    if (c === '(') depth++;
    if (c === ')' && --depth < 0) return false;
  }
  return depth === 0;
}

function splitUnion(expression: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let current = '';
  let quoted = false;
  for (const c of expression) {
    if (c === "'") quoted = !quoted;
    if (!quoted && c === '(') depth++;
    if (!quoted && c === ')') depth--;
    if (!quoted && depth === 0 && c === '|') {
      out.push(current);
      current = '';
    } else current += c;
  }
  out.push(current);
  return out;
}

function compileBranch(rt: string, branch: string, lookup: ElementLookup): SimplePath | undefined {
  let text = branch;
  let filter: SimplePath['filter'];
  const resolveIs = /\.where\(\(?resolve\(\) is ([A-Z][A-Za-z]+)\)?\)$/.exec(text);
  const equals = /\.where\(\(?([a-z][A-Za-z]*) = '([^']*)'\)?\)$/.exec(text);
  if (resolveIs) {
    filter = { kind: 'resolve-is', type: resolveIs[1] };
    text = text.slice(0, resolveIs.index);
  } else if (equals) {
    filter = { kind: 'equals', field: equals[1], value: equals[2] };
    text = text.slice(0, equals.index);
  }
  let cast: string | undefined;
  const as = /^\(?(.+?)\)? as ([A-Za-z]+)$/.exec(text);
  if (as) {
    text = stripParens(as[1]);
    cast = as[2];
  }
  if (!/^[A-Z][A-Za-z]*(\.[a-z][A-Za-z0-9]*)+$/.test(text)) return undefined;
  const [root, ...segments] = text.split('.');
  if (root !== rt) return undefined;

  let typeName = rt;
  let path = rt;
  const keys: string[] = [];
  let type = '';
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i];
    const last = i === segments.length - 1;
    let el = lookup(typeName, `${path}.${s}`);
    let key = s;
    if (!el) {
      el = lookup(typeName, `${path}.${s}[x]`);
      if (!el) return undefined;
      if (!last || !cast || !el.types.includes(cast)) return undefined;
      key = s + cast[0].toUpperCase() + cast.slice(1);
      keys.push(key);
      type = cast;
      break;
    }
    keys.push(key);
    if (el.contentReference) {
      path = el.contentReference.replace(/^#/, '');
      type = 'BackboneElement';
      continue;
    }
    if (el.types.length !== 1) return undefined;
    type = el.types[0];
    if (last) break;
    if (type === 'BackboneElement' || type === 'Element') {
      path = `${path}.${s}`;
    } else if (PRIMITIVES.has(type)) {
      return undefined;
    } else {
      typeName = type;
      path = type;
    }
  }
  if (cast && type !== cast) return undefined;
  if (type === 'BackboneElement' || type === 'Element' || type === 'Resource' || type === 'Extension') return undefined;
  return { keys, type, filter };
}

/** Evaluates compiled paths on a resource's JSON. */
export function evaluateSimplePaths(resource: unknown, paths: SimplePath[]): TypedValue[] {
  const out: TypedValue[] = [];
  for (const p of paths) {
    let values: unknown[] = [resource];
    for (const key of p.keys) {
      const next: unknown[] = [];
      for (const v of values) {
        const x = (v as Record<string, unknown>)[key];
        if (x === undefined || x === null) continue;
        if (Array.isArray(x)) {
          for (const y of x) if (y !== undefined && y !== null) next.push(y);
        } else next.push(x);
      }
      values = next;
      if (values.length === 0) break;
    }
    for (const v of values) {
      if (p.filter?.kind === 'resolve-is') {
        const ref = (v as { reference?: unknown }).reference;
        if (typeof ref !== 'string' || !(ref.startsWith(`${p.filter.type}/`) || ref.includes(`/${p.filter.type}/`))) continue;
      } else if (p.filter?.kind === 'equals') {
        if ((v as Record<string, unknown>)[p.filter.field] !== p.filter.value) continue;
      }
      out.push({ type: p.type, value: v });
    }
  }
  return out;
}

/** Builds an element lookup over StructureDefinitions (resource and datatype), indexed lazily. */
export function createElementLookup(sds: ReadonlyMap<string, StructureDefinition>): ElementLookup {
  const indexed = new Map<string, Map<string, { types: string[]; contentReference?: string }>>();
  return (typeName, path) => {
    let index = indexed.get(typeName);
    if (!index) {
      index = new Map();
      for (const el of sds.get(typeName)?.snapshot?.element ?? []) {
        if (!el.path) continue;
        index.set(el.path, { types: (el.type ?? []).map((t) => t.code as string), contentReference: el.contentReference });
      }
      indexed.set(typeName, index);
    }
    return index.get(path);
  };
}
