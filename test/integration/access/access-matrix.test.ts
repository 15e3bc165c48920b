/**
 * The access matrix: every route of the composed app (read from its router stacks) and the FHIR
 * interactions on Patient, ImagingStudy, Condition, Group and AuditEvent, for every caller:
 * anonymous, four tokens that must be refused, and the four roles in each of two projects.
 * Each cell checks the status (401 + WWW-Authenticate, 403 with a body, 404 exactly like a
 * missing id, empty searches and zero counts for the other project) and that no text of the
 * other project appears anywhere in the answer.
 */
import { makeCallers, requestsSent, seedProjects, send, type Caller } from './access-fixtures';
import { expectForbidden, expectNoLeak, expectUnauthenticated, exportRouteRoles, governanceRouteRoles, privacyRouteRoles, PUBLIC_PATHS, type Failures } from './access-expectations';
import { checkDicomwebCell, dicomwebOrder, type MatrixWorld } from './dicomweb-cells';
import { checkFhirCell } from './fhir-cells';
import { fhirRoutes, inventoryRoutes, type DeclaredRoute } from './route-inventory';
import { startTestApp } from '../../helpers/test-app';

jest.setTimeout(180_000);

/** Cells of routes that are neither DICOMweb nor FHIR: public documents, OAuth endpoints, the rest. */
async function checkOtherCell(w: MatrixWorld, route: DeclaredRoute, caller: Caller): Promise<Failures> {
  const failures: Failures = [];
  const method = route.method === 'ALL' ? 'GET' : route.method;
  const token = caller.kind === 'anonymous' ? undefined : caller.token;
  if (route.path === '/oauth2/introspect') {
    // Authenticates its own caller (RFC 7662 2.1): any valid token may ask about a token.
    const out = { method, path: route.path, body: `token=${encodeURIComponent(w.t.adminToken)}`, contentType: 'application/x-www-form-urlencoded' };
    const a = await send(w.t, out, token);
    if (caller.kind === 'member') {
      if (a.status !== 200) failures.push(`introspection by ${caller.label} answers ${a.status}`);
    } else expectUnauthenticated(caller, out, a, failures);
    expectNoLeak(out, a, [w.projects.A, w.projects.B], failures);
    return failures;
  }
  const out = { method, path: route.path, ...(method === 'POST' ? { body: '', contentType: 'application/x-www-form-urlencoded' } : {}) };
  const a = await send(w.t, out, token);
  if (PUBLIC_PATHS.has(route.path)) {
    // The same answer whoever asks: a stale or forged token changes nothing on a public path.
    const anonymous = await send(w.t, out);
    if (a.status !== anonymous.status || a.status === 401 || a.status === 403) failures.push(`public ${route.path} answers ${a.status} to ${caller.label} and ${anonymous.status} to anonymous`);
  } else if (caller.kind !== 'member') {
    expectUnauthenticated(caller, out, a, failures);
  } else if (privacyRouteRoles(method, route.path)) {
    // The privacy routes: the policy admits some roles (the route then decides by project), refuses the rest.
    if (!privacyRouteRoles(method, route.path)!.includes(caller.role)) expectForbidden(out, a, failures);
    else if (a.status === 401 || a.status === 403 || a.status >= 500) failures.push(`${route.path} refuses ${caller.label}: ${a.status}`);
  } else if (exportRouteRoles(route.path)) {
    // Bulk export: the exporting roles pass the policy (the kick-off then wants Prefer: respond-async, the job ids here are nobody's: 400 / 404).
    if (!exportRouteRoles(route.path)!.includes(caller.role)) expectForbidden(out, a, failures);
    else if (a.status !== 400 && a.status !== 404) failures.push(`${route.path} answers ${caller.label} with ${a.status}, expected 400 or 404`);
  } else if (governanceRouteRoles(method, route.path)) {
    // Governance: every member lists its projects; PIs and admins decide cohort exports.
    if (!governanceRouteRoles(method, route.path)!.includes(caller.role)) expectForbidden(out, a, failures);
    else if (a.status === 401 || a.status === 403 || a.status >= 500) failures.push(`${route.path} refuses ${caller.label}: ${a.status}`);
  } else if (caller.role !== 'admin') {
    // Any other path is administration (policy-routes: safe by default): admin only.
    expectForbidden(out, a, failures);
  } else if (a.status === 401 || a.status === 403) {
    failures.push(`${route.path} refuses admin: ${a.status}`);
  }
  expectNoLeak(out, a, [w.projects.A, w.projects.B], failures);
  return failures;
}

describe('access matrix: every route x every caller', () => {
  const world = {} as MatrixWorld;
  let callers: Caller[] = [];
  const declared = { routes: [] as DeclaredRoute[], catchAll: [] as string[] };
  const results: Array<{ route: string; caller: string; failures: Failures }> = [];

  beforeAll(async () => {
    world.t = await startTestApp();
    world.projects = await seedProjects(world.t);
    callers = await makeCallers(world.t, world.projects);
    Object.assign(declared, inventoryRoutes(world.t.app.express));
  });
  afterAll(async () => {
    const failed = results.filter((r) => r.failures.length > 0).length;
    const routes = new Set(results.map((r) => r.route)).size;
    console.log(`access matrix: ${routes} routes x ${callers.length} callers = ${results.length} cells, ${requestsSent()} requests, ${failed} cells with failures`);
    await world.t?.close();
  });

  test('the router stacks declare the DICOMweb, OAuth and health routes, and one catch-all router (FHIR)', () => {
    expect(declared.catchAll).toEqual(['/fhir']);
    expect(declared.routes.filter((r) => r.path.startsWith('/dicomweb')).length).toBeGreaterThan(25);
    expect(declared.routes.map((r) => `${r.method} ${r.path}`)).toEqual(expect.arrayContaining(['GET /healthz', 'POST /oauth2/token', 'GET /dicomweb/studies', 'POST /dicomweb/studies']));
  });

  /** Runs every caller against the declared routes `which` selects; failures name route and caller. */
  async function runDeclared(which: (r: DeclaredRoute) => boolean, check: typeof checkOtherCell): Promise<string[]> {
    const failures: string[] = [];
    for (const route of declared.routes.filter(which).sort(dicomwebOrder)) {
      for (const caller of callers) {
        const f = await check(world, route, caller);
        results.push({ route: `${route.method} ${route.path}`, caller: caller.label, failures: f });
        for (const x of f) failures.push(`[${route.method} ${route.path} | ${caller.label}] ${x}`);
      }
    }
    return failures;
  }

  test('DICOMweb routes (QIDO, WADO, rendered, thumbnails, STOW, delete, capabilities)', async () => {
    expect(await runDeclared((r) => r.path.startsWith('/dicomweb'), checkDicomwebCell)).toEqual([]);
  });

  test('every other declared route (health, discovery, OAuth, SAML, anything added later)', async () => {
    expect(await runDeclared((r) => !r.path.startsWith('/dicomweb'), checkOtherCell)).toEqual([]);
  });

  test('FHIR interactions on Patient, ImagingStudy, Condition, Group and AuditEvent', async () => {
    const failures: string[] = [];
    for (const route of fhirRoutes()) {
      const name = `${route.interaction}${route.variant && route.variant !== 'plain' ? `(${route.variant})` : ''} ${route.type}`;
      for (const caller of callers) {
        const f = await checkFhirCell(world, route, caller);
        results.push({ route: name, caller: caller.label, failures: f });
        for (const x of f) failures.push(`[${name} | ${caller.label}] ${x}`);
      }
    }
    expect(failures).toEqual([]);
  });

  test('the fixtures survived the matrix (no cell deleted or took over the other project\'s data)', async () => {
    for (const key of ['A', 'B'] as const) {
      const p = world.projects[key];
      const res = await send(world.t, { method: 'GET', path: `/dicomweb/studies?StudyInstanceUID=${p.study.study}`, headers: { Accept: 'application/dicom+json' } }, world.t.adminToken);
      expect(res.text).toContain(p.study.study);
      const links = await world.t.app.db.knex('project_studies as ps').join('studies as st', 'st.id', 'ps.study_pk').where('st.study_uid', p.study.study).pluck('ps.project_id');
      expect(links).toEqual([p.id]);
    }
  });
});
