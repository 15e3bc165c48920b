/**
 * The routes of the composed app, read from the express router stacks (router 2.x layers carry
 * their mount path in `rawPath`), so a route added to any router is in the access matrix the
 * next time it runs. Routers that declare no routes (the FHIR adapter is one catch-all
 * middleware) are listed apart; their interactions are enumerated per resource type.
 */
import type { Express } from 'express';

/** One declared route: method (upper case, `ALL` for router.all) and full path with :params. */
export interface DeclaredRoute {
  method: string;
  path: string;
}

/** Everything the stacks declare. */
export interface RouteInventory {
  routes: DeclaredRoute[];
  /** Mount paths of routers that answer everything below them from one middleware. */
  catchAll: string[];
}

interface LayerLike {
  rawPath?: string | string[];
  route?: { path: string | string[]; methods: Record<string, boolean> };
  handle?: { stack?: LayerLike[] };
}

/** Walks `app.router.stack` (express 5) and every mounted router below it. */
export function inventoryRoutes(app: Express): RouteInventory {
  const root = (app as unknown as { router: { stack: LayerLike[] } }).router;
  const out: RouteInventory = { routes: [], catchAll: [] };
  walk(root.stack, '', out);
  const seen = new Set<string>();
  out.routes = out.routes.filter((r) => {
    const key = `${r.method} ${r.path}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  return out;
}

function walk(stack: LayerLike[], prefix: string, out: RouteInventory): void {
  for (const layer of stack) {
    if (layer.route) {
      const paths = Array.isArray(layer.route.path) ? layer.route.path : [layer.route.path];
      for (const p of paths) {
        for (const [m, on] of Object.entries(layer.route.methods)) {
          if (on) out.routes.push({ method: m === '_all' ? 'ALL' : m.toUpperCase(), path: join(prefix, p) });
        }
      }
      continue;
    }
    const sub = layer.handle?.stack;
    if (!sub || Array.isArray(layer.rawPath)) continue;
    const mount = join(prefix, layer.rawPath ?? '/');
    if (declaresRoutes(sub)) walk(sub, mount === '/' ? '' : mount, out);
    else out.catchAll.push(mount);
  }
}

function declaresRoutes(stack: LayerLike[]): boolean {
  return stack.some((l) => l.route || (l.handle?.stack && declaresRoutes(l.handle.stack)));
}

function join(prefix: string, path: string): string {
  if (path === '/' && prefix) return prefix;
  return `${prefix}${path}`.replace(/\/{2,}/g, '/');
}

/** The FHIR REST interactions the matrix drives on each covered type (FHIR R4 http 3.1.0). */
export const FHIR_INTERACTIONS = ['read', 'search', 'create', 'update', 'delete'] as const;
export type FhirInteraction = (typeof FHIR_INTERACTIONS)[number];

/** The FHIR resource types the matrix covers: clinical, DICOM-derived, cohort and audit. */
export const FHIR_TYPES = ['Patient', 'ImagingStudy', 'Condition', 'Group', 'AuditEvent'] as const;
export type FhirType = (typeof FHIR_TYPES)[number];

/** A FHIR interaction on a type, as a route of the matrix. */
export interface FhirRoute {
  type: FhirType;
  interaction: FhirInteraction;
  /** Search variants: plain, `_summary=count`, `_total=accurate`. */
  variant?: 'plain' | 'count' | 'total';
}

/** Every FHIR route the matrix drives: types x interactions, searches in three variants. */
export function fhirRoutes(): FhirRoute[] {
  const out: FhirRoute[] = [];
  for (const type of FHIR_TYPES) {
    for (const interaction of FHIR_INTERACTIONS) {
      if (interaction === 'search') for (const variant of ['plain', 'count', 'total'] as const) out.push({ type, interaction, variant });
      else out.push({ type, interaction });
    }
  }
  return out;
}
