/**
 * The FHIR cells of the access matrix: one interaction on one resource type for one caller,
 * against the caller's own resource, the other project's and a missing id (FHIR R4 http
 * 3.1.0: read, search, create, update, delete). Searches are run plain, with
 * `_summary=count` and with `_total=accurate`, so no count can reveal another project's rows.
 */
import { createResource, missingId, resourceOf, send, type Answer, type Caller, type Outgoing, type ProjectData } from './access-fixtures';
import { expectForbidden, expectLikeMissing, expectNoLeak, expectSuccess, expectUnauthenticated, resultCount, roleMay, safeJson, type Failures } from './access-expectations';
import type { MatrixWorld } from './dicomweb-cells';
import type { FhirRoute, FhirType } from './route-inventory';

type Member = Extract<Caller, { kind: 'member' }>;
type Target = 'own' | 'other' | 'missing';

const FHIR_JSON = 'application/fhir+json';

/** The id of a project's resource of `type`; AuditEvents belong to no project. */
function idOf(p: ProjectData, type: FhirType): string | undefined {
  return type === 'AuditEvent' ? undefined : p.fhir[type];
}

/** Runs one FHIR interaction for one caller and returns what was not as expected. */
export async function checkFhirCell(w: MatrixWorld, route: FhirRoute, caller: Caller): Promise<Failures> {
  const failures: Failures = [];
  const { type, interaction } = route;

  if (caller.kind !== 'member') {
    const out = await outgoing(w, route, w.projects.A, 'own', undefined);
    const a = await send(w.t, out, caller.kind === 'bad-token' ? caller.token : undefined);
    expectUnauthenticated(caller, out, a, failures);
    expectNoLeak(out, a, [w.projects.A, w.projects.B], failures);
    return failures;
  }

  const mine = w.projects[caller.project];
  const theirs = w.projects[caller.project === 'A' ? 'B' : 'A'];
  const admin = caller.role === 'admin';
  const leakCheck = (out: Outgoing, a: Answer) => {
    if (!admin) expectNoLeak(out, a, [theirs], failures);
  };
  const targets: Target[] = type === 'AuditEvent' && interaction !== 'create' ? ['missing'] : ['own', 'other', 'missing'];

  if (!roleMay(caller.role, type, interaction)) {
    for (const target of targets) {
      const out = await outgoing(w, route, target === 'other' ? theirs : mine, target, caller);
      const a = await send(w.t, out, caller.token);
      expectForbidden(out, a, failures);
      leakCheck(out, a);
    }
    return failures;
  }

  if (interaction === 'create') {
    const o1 = await outgoing(w, route, mine, 'own', caller);
    const a1 = await send(w.t, o1, caller.token);
    expectSuccess(o1, a1, failures);
    const o2 = await outgoing(w, route, theirs, 'other', caller);
    const a2 = await send(w.t, o2, caller.token);
    if (admin) expectSuccess(o2, a2, failures);
    else expectForbidden(o2, a2, failures, new RegExp(`not a member of project ${theirs.id}`));
    leakCheck(o2, a2);
    return failures;
  }

  const answers = {} as Record<Target, { out: Outgoing; a: Answer; ids: string[] }>;
  for (const target of targets) {
    const out = await outgoing(w, route, target === 'other' ? theirs : mine, target, caller);
    const a = await send(w.t, out, caller.token);
    answers[target] = { out, a, ids: [out.targetId] };
    leakCheck(out, a);
  }

  if (interaction === 'search') {
    if (route.variant === 'plain' && type !== 'AuditEvent') {
      // Unfiltered: the caller's own resource is listed, nothing of the other project is.
      const listOut = { method: 'GET', path: `/fhir/${type}?_count=500`, headers: { Accept: FHIR_JSON } };
      const list = await send(w.t, listOut, caller.token);
      expectSuccess(listOut, list, failures);
      if (!list.text.includes(idOf(mine, type)!)) failures.push(`${listOut.path} does not list the caller's own ${type}`);
      leakCheck(listOut, list);
    }
    for (const target of targets) expectSuccess(answers[target].out, answers[target].a, failures);
    if (answers.own) {
      const n = resultCount(answers.own.a);
      if (!n) failures.push(`${answers.own.out.path} finds ${n} of the caller's own resources`);
    }
    if (answers.other) {
      const n = resultCount(answers.other.a);
      if (admin && !n) failures.push(`admin finds nothing with ${answers.other.out.path}`);
      if (!admin) {
        if (n !== 0) failures.push(`${answers.other.out.path} counts ${n} resources of ${theirs.id}`);
        expectLikeMissing(answers.other, answers.missing, failures);
      }
    }
    if (resultCount(answers.missing.a) !== 0) failures.push(`${answers.missing.out.path} finds a missing id`);
    return failures;
  }

  if (answers.own) expectSuccess(answers.own.out, answers.own.a, failures);
  if (interaction === 'update') {
    // Create-on-update (3.1.0.4) for an id nobody has; the other project's resource stays theirs.
    if (answers.missing.a.status !== 201) failures.push(`update of a missing id answers ${answers.missing.a.status}, not 201`);
    if (answers.other) {
      if (admin) expectSuccess(answers.other.out, answers.other.a, failures);
      else if (answers.other.a.status !== 404) failures.push(`update of ${theirs.id}'s ${type} answers ${answers.other.a.status}, not 404: ${answers.other.a.text.slice(0, 200)}`);
    }
    return failures;
  }
  if (answers.missing.a.status !== 404) failures.push(`${interaction} of a missing ${type} answers ${answers.missing.a.status}, not 404`);
  if (answers.other) {
    if (admin) expectSuccess(answers.other.out, answers.other.a, failures);
    else expectLikeMissing(answers.other, answers.missing, failures);
  }
  return failures;
}

/** Builds the request of one cell (creating a throw-away resource for deletes). */
async function outgoing(w: MatrixWorld, route: FhirRoute, project: ProjectData, target: Target, caller: Member | undefined): Promise<Outgoing & { targetId: string }> {
  const { type, interaction } = route;
  const headers: Record<string, string> = { Accept: FHIR_JSON };
  let id = target === 'missing' ? missingId() : (idOf(project, type) ?? missingId());
  switch (interaction) {
    case 'read':
      return { method: 'GET', path: `/fhir/${type}/${id}`, headers, targetId: id };
    case 'search': {
      const extra = route.variant === 'count' ? '&_summary=count' : route.variant === 'total' ? '&_total=accurate' : '';
      return { method: 'GET', path: `/fhir/${type}?_id=${id}${extra}`, headers, targetId: id };
    }
    case 'create': {
      if (target === 'other') headers['X-Project'] = project.id;
      const body = JSON.stringify(resourceOf(type, project.fhir.Patient, `new${Date.now()}`));
      return { method: 'POST', path: `/fhir/${type}`, headers, body, contentType: FHIR_JSON, targetId: '' };
    }
    case 'update': {
      // The resource's own content again (a new version, same data), or a new one for a missing id.
      let resource: Record<string, unknown> = { ...resourceOf(type, project.fhir.Patient, 'upd'), id };
      if (target !== 'missing' && type !== 'AuditEvent') {
        const current = await send(w.t, { method: 'GET', path: `/fhir/${type}/${id}`, headers }, w.t.adminToken);
        resource = safeJson(current.text) as Record<string, unknown>;
      }
      return { method: 'PUT', path: `/fhir/${type}/${id}`, headers, body: JSON.stringify(resource), contentType: FHIR_JSON, targetId: id };
    }
    case 'delete': {
      // Deleting must not take the fixtures with it: a resource of the same project, made for this.
      if (target !== 'missing' && type !== 'AuditEvent' && caller && roleMay(caller.role, type, 'delete')) {
        id = await createResource(w.t, w.t.adminToken, resourceOf(type, project.fhir.Patient, 'del'), project.id);
      }
      return { method: 'DELETE', path: `/fhir/${type}/${id}`, headers, targetId: id };
    }
  }
}
