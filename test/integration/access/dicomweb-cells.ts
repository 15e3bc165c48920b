/**
 * The DICOMweb cells of the access matrix: one declared route (method + path with :params) for
 * one caller, driven against the caller's own study, the other project's study and a missing
 * one. Routes are classified by their shape (PS3.18: POST stores, DELETE deletes, a path ending
 * in studies/series/instances searches, anything else retrieves), so a new route is checked
 * without being listed anywhere.
 */
import { randomUUID } from 'node:crypto';
import type { TestApp } from '../../helpers/test-app';
import { missingUid, send, storeStudy, stowBody, syntheticInstance, type Answer, type Caller, type Outgoing, type ProjectData, type ProjectKey } from './access-fixtures';
import {
  expectForbidden,
  expectLikeMissing,
  expectNoLeak,
  expectSuccess,
  expectUnauthenticated,
  roleMay,
  safeJson,
  type Failures,
  type Interaction,
} from './access-expectations';

/** What the cells need: the app and both projects. */
export interface MatrixWorld {
  t: TestApp;
  projects: Record<ProjectKey, ProjectData>;
}

type Target = 'own' | 'other' | 'missing';
interface StudyIds {
  study: string;
  series: string;
  sop: string;
}

/** The interaction a DICOMweb route performs. */
export function dicomwebInteraction(method: string, path: string): { resourceType: string; interaction: Interaction } {
  if (path === '/dicomweb' || path === '/dicomweb/') return { resourceType: 'CapabilityStatement', interaction: 'read' };
  if (method === 'POST' || method === 'PUT') return { resourceType: 'ImagingStudy', interaction: 'create' };
  if (method === 'DELETE') return { resourceType: 'ImagingStudy', interaction: 'delete' };
  return { resourceType: 'ImagingStudy', interaction: /\/(studies|series|instances)$/.test(path) ? 'search' : 'read' };
}

/** Reads before writes, deletes last: a cell's writes must not change what later cells read. */
export function dicomwebOrder(a: { method: string }, b: { method: string }): number {
  const rank = (m: string) => (m === 'DELETE' ? 2 : m === 'POST' || m === 'PUT' ? 1 : 0);
  return rank(a.method) - rank(b.method);
}

/** Fills a route's :params from a study; refuses params it does not know (a new route needs a value here). */
export function fillPath(path: string, ids: StudyIds): string {
  return path.replace(/[:*](\w+)/g, (_m, name: string) => {
    switch (name) {
      case 'study':
        return ids.study;
      case 'series':
        return ids.series;
      case 'instance':
        return ids.sop;
      case 'frames':
        return '1';
      case 'path':
        return '7FE00010';
      default:
        throw new Error(`the access matrix has no value for :${name} in ${path}; add one to fillPath`);
    }
  });
}

/** WADO-URI (PS3.18 chapter 9) names its object in the query, not the path. */
const isWadoUri = (path: string): boolean => path === '/dicomweb/wado';

/** The WADO-URI query for a study's instance (the DICOM instance, as the wadouri loaders of viewers ask). */
function wadoUriQuery(ids: StudyIds): string {
  return `?requestType=WADO&studyUID=${ids.study}&seriesUID=${ids.series}&objectUID=${ids.sop}&contentType=application/dicom`;
}

const missingStudy = (): StudyIds => ({ study: missingUid(), series: missingUid(), sop: missingUid() });
const own = (w: MatrixWorld, c: Extract<Caller, { kind: 'member' }>) => w.projects[c.project];
const other = (w: MatrixWorld, c: Extract<Caller, { kind: 'member' }>) => w.projects[c.project === 'A' ? 'B' : 'A'];

/** Runs one DICOMweb route for one caller and returns what was not as expected. */
export async function checkDicomwebCell(w: MatrixWorld, route: { method: string; path: string }, caller: Caller): Promise<Failures> {
  const failures: Failures = [];
  const method = route.method === 'ALL' ? 'GET' : route.method;
  const { resourceType, interaction } = dicomwebInteraction(method, route.path);
  const hasStudy = route.path.includes(':study') || isWadoUri(route.path);

  if (caller.kind !== 'member') {
    const out = await outgoing(w, method, route.path, interaction, 'own', w.projects.A.study, undefined);
    const a = await send(w.t, out, caller.kind === 'bad-token' ? caller.token : undefined);
    expectUnauthenticated(caller, out, a, failures);
    expectNoLeak(out, a, [w.projects.A, w.projects.B], failures);
    return failures;
  }

  const mine = own(w, caller);
  const theirs = other(w, caller);
  // Researchers and PIs address their own study by its de-identified UIDs (PS3.15 Annex E views).
  const map = caller.role === 'researcher' || caller.role === 'pi' ? w.t.app.privacy.uidMapper(mine.id) : (uid: string) => uid;
  const mineIds: StudyIds = { study: map(mine.study.study), series: map(mine.study.series), sop: map(mine.study.sop) };
  const admin = caller.role === 'admin';
  const allowed = roleMay(caller.role, resourceType, interaction);
  const leakCheck = (out: Outgoing, a: Answer) => {
    if (!admin) expectNoLeak(out, a, [theirs], failures);
  };

  if (!allowed) {
    for (const target of ['own', 'other', 'missing'] as const) {
      const ids = target === 'own' ? mine.study : target === 'other' ? theirs.study : missingStudy();
      const out = await outgoing(w, method, route.path, interaction, target, ids, target === 'other' ? theirs.id : undefined);
      const a = await send(w.t, out, caller.token);
      expectForbidden(out, a, failures);
      leakCheck(out, a);
    }
    return failures;
  }

  if (interaction === 'create' && !hasStudy) {
    // STOW to /studies: into the caller's project, or naming the other project.
    const mineOut = await outgoing(w, method, route.path, interaction, 'own', mine.study, undefined);
    const a1 = await send(w.t, mineOut, caller.token);
    expectSuccess(mineOut, a1, failures);
    const theirsOut = await outgoing(w, method, route.path, interaction, 'other', theirs.study, theirs.id);
    const a2 = await send(w.t, theirsOut, caller.token);
    if (admin) expectSuccess(theirsOut, a2, failures);
    else expectForbidden(theirsOut, a2, failures, new RegExp(`not a member of project ${theirs.id}`));
    leakCheck(theirsOut, a2);
    return failures;
  }

  if (!hasStudy) {
    // Searches across studies: the caller's rows are there, the other project's are not, and
    // filtering by the other project's Study Instance UID answers as for a missing one.
    const listOut = { method, path: route.path, headers: { Accept: acceptFor(route.path) } };
    const list = await send(w.t, listOut, caller.token);
    expectSuccess(listOut, list, failures);
    const ownKey = route.path.endsWith('/studies') ? mineIds.study : route.path.endsWith('/series') ? mineIds.series : mineIds.sop;
    if (route.path !== '/dicomweb' && !list.text.includes(ownKey)) failures.push(`${route.path} does not list the caller's own ${ownKey}`);
    leakCheck(listOut, list);
    if (route.path === '/dicomweb') return failures;
    const filtered = (uid: string) => ({ method, path: `${route.path}?StudyInstanceUID=${uid}`, headers: { Accept: 'application/dicom+json' } });
    const missing = missingUid();
    const [o, m] = [filtered(theirs.study.study), filtered(missing)];
    const [ao, am] = [await send(w.t, o, caller.token), await send(w.t, m, caller.token)];
    if (admin) {
      if (!ao.text.includes(theirs.study.study)) failures.push(`admin does not find ${theirs.id}'s study with ${o.path}`);
    } else {
      expectLikeMissing({ out: o, a: ao, ids: [theirs.study.study] }, { out: m, a: am, ids: [missing] }, failures);
      if ((safeJson(ao.text) as unknown[] | undefined)?.length) failures.push(`${o.path} counts rows of ${theirs.id}`);
    }
    leakCheck(o, ao);
    return failures;
  }

  // One study addressed in the path: own, other, missing.
  const answers = {} as Record<Target, { out: Outgoing; a: Answer; ids: string[] }>;
  for (const target of ['own', 'other', 'missing'] as const) {
    let ids = target === 'own' ? mineIds : target === 'other' ? theirs.study : missingStudy();
    if (interaction === 'delete' && target !== 'missing') {
      // Deleting must not take the fixtures with it: a study of the same project, made for this.
      ids = await storeStudy(w.t, w.t.adminToken, target === 'own' ? mine.id : theirs.id);
    }
    const out = await outgoing(w, method, route.path, interaction, target, ids, undefined);
    const a = await send(w.t, out, caller.token);
    answers[target] = { out, a, ids: [ids.study, ids.series, ids.sop] };
    leakCheck(out, a);
  }
  expectSuccess(answers.own.out, answers.own.a, failures);
  if (interaction === 'create') {
    expectSuccess(answers.missing.out, answers.missing.a, failures);
    // Storing into another project's study must not hand it over (checked in cross-project-writes).
    if (admin) expectSuccess(answers.other.out, answers.other.a, failures);
    else if (answers.other.a.status < 400) failures.push(`a store into ${theirs.id}'s study was accepted: ${answers.other.a.status} ${answers.other.a.text.slice(0, 200)}`);
    return failures;
  }
  // A search below a missing study may answer an empty list; a retrieve or delete must not succeed.
  if (interaction !== 'search' && answers.missing.a.status < 400) failures.push(`a missing study answers ${answers.missing.a.status} on ${answers.missing.out.method} ${answers.missing.out.path}`);
  if (admin) expectSuccess(answers.other.out, answers.other.a, failures);
  else expectLikeMissing(answers.other, answers.missing, failures);
  return failures;
}

/** Builds the request of one cell. */
async function outgoing(w: MatrixWorld, method: string, path: string, interaction: Interaction, target: Target, ids: StudyIds, project: string | undefined): Promise<Outgoing> {
  const headers: Record<string, string> = { Accept: acceptFor(path) };
  if (project) headers['X-Project'] = project;
  const filled = isWadoUri(path) ? `${path}${wadoUriQuery(ids)}` : fillPath(path, ids);
  if (interaction !== 'create') return { method, path: filled, headers };
  // A store carries one fresh instance (of the addressed study when the path names one).
  const instance = syntheticInstance({ studyInstanceUID: path.includes(':study') ? ids.study : undefined, patientID: `PID-${randomUUID()}` });
  const { body, contentType } = stowBody(instance.bytes);
  return { method, path: filled, headers: { ...headers, Accept: 'application/dicom+json' }, body, contentType };
}

function acceptFor(path: string): string {
  if (/\/(rendered|thumbnail)$/.test(path)) return 'image/jpeg';
  if (isWadoUri(path)) return '*/*';
  if (/\/frames\/|\/bulkdata\//.test(path)) return 'multipart/related; type="application/octet-stream"; transfer-syntax=*';
  if (path === '/dicomweb') return 'application/json';
  if (/\/(metadata|studies|series|instances)$/.test(path)) return 'application/dicom+json';
  return 'multipart/related; type="application/dicom"; transfer-syntax=*';
}
