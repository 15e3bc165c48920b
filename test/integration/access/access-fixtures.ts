/**
 * Data and callers for the access tests: two projects, each with a stored DICOM study and FHIR
 * resources written by its own members; the four roles in each project; and the tokens that
 * must be refused (expired, other audience, unsigned, tampered). Every name and id is fresh,
 * so the other project's data can be searched for in any answer as plain text.
 */
import { randomBytes } from 'node:crypto';
import { SignJWT } from 'jose';
import request from 'supertest';
import { issueAccessToken } from '../../../src/auth/access-token';
import type { Role } from '../../../src/auth/roles';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import type { TestApp } from '../../helpers/test-app';
import { tamperJwt, unsignedJwt } from '../../helpers/tokens';

export const ROLES: readonly Role[] = ['admin', 'data-manager', 'pi', 'researcher'];

/** A caller of the matrix. */
export type Caller =
  | { kind: 'anonymous'; label: string }
  | { kind: 'bad-token'; label: string; token: string }
  | { kind: 'member'; label: string; role: Role; project: ProjectKey; token: string };

export type ProjectKey = 'A' | 'B';

/** One project's data: ids to address it, and text that must never reach a non-member. */
export interface ProjectData {
  id: string;
  study: { study: string; series: string; sop: string };
  fhir: { Patient: string; ImagingStudy: string; Condition: string; Group: string; dicomPatient: string };
  /** Every identifying string of this project's data (UIDs, ids, names, descriptions). */
  markers: string[];
}

/** A raw answer: status, headers, body as text (binary bodies as latin1). */
export interface Answer {
  status: number;
  headers: Record<string, string>;
  text: string;
}

/** What a request sends. */
export interface Outgoing {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: Buffer | string | object;
  contentType?: string;
}

const tag = () => randomBytes(4).toString('hex');

let sent = 0;

/** How many requests `send` has made (the matrix reports its size). */
export const requestsSent = (): number => sent;

/** Sends one request to the app without any default credentials. */
export async function send(t: TestApp, out: Outgoing, token?: string): Promise<Answer> {
  sent++;
  let r = request(t.app.express)[out.method.toLowerCase() as 'get'](out.path);
  if (token) r = r.set('Authorization', `Bearer ${token}`);
  for (const [k, v] of Object.entries(out.headers ?? {})) r = r.set(k, v);
  if (out.contentType) r = r.set('Content-Type', out.contentType);
  r = r.buffer(true).parse((res, done) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => done(null, Buffer.concat(chunks)));
  });
  const res = out.body === undefined ? await r : await r.send(out.body as never);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers)) headers[k] = Array.isArray(v) ? v.join(', ') : String(v);
  return { status: res.status, headers, text: (res.body as Buffer).toString('latin1') };
}

/** A fresh one-instance DICOM file (16x16, 8 bit) with unique demographics. */
export function syntheticInstance(options: { studyInstanceUID?: string; patientID?: string; patientName?: string } = {}) {
  const id = tag();
  return createSyntheticInstance({
    studyInstanceUID: options.studyInstanceUID,
    patientID: options.patientID ?? `PID-${id}`,
    patientName: options.patientName ?? `Synth^Disposable${id}`,
    accessionNumber: `ACC${id}`,
    studyDescription: `study ${id}`,
    rows: 16,
    columns: 16,
    bitsAllocated: 8,
  });
}

/** A STOW-RS body of one instance. */
export function stowBody(bytes: Buffer): { body: Buffer; contentType: string } {
  return buildMultipart([bytes]);
}

/** Stores one instance as `token` (optionally naming the project) and fails loudly otherwise. */
export async function storeStudy(t: TestApp, token: string, project: string | undefined, instance = syntheticInstance()) {
  const { body, contentType } = stowBody(instance.bytes);
  const res = await send(t, { method: 'POST', path: '/dicomweb/studies', body, contentType, headers: project ? { 'X-Project': project } : {} }, token);
  if (res.status !== 200) throw new Error(`STOW as fixture answered ${res.status}: ${res.text.slice(0, 300)}`);
  return { study: instance.studyInstanceUID, series: instance.seriesInstanceUID, sop: instance.sopInstanceUID };
}

/** Creates a FHIR resource as `token` (optionally in a named project) and returns its id. */
export async function createResource(t: TestApp, token: string, resource: Record<string, unknown>, project?: string): Promise<string> {
  const res = await send(
    t,
    { method: 'POST', path: `/fhir/${String(resource.resourceType)}`, body: JSON.stringify(resource), contentType: 'application/fhir+json', headers: project ? { 'X-Project': project } : {} },
    token,
  );
  if (res.status !== 201) throw new Error(`FHIR create as fixture answered ${res.status}: ${res.text.slice(0, 300)}`);
  return JSON.parse(res.text).id as string;
}

/** A valid resource of a covered type (the subject is a Patient id). */
export function resourceOf(type: string, patientId: string, label: string): Record<string, unknown> {
  switch (type) {
    case 'Patient':
      return { resourceType: 'Patient', name: [{ family: `Fam${label}`, given: [`Giv${label}`] }] };
    case 'Condition':
      return { resourceType: 'Condition', subject: { reference: `Patient/${patientId}` }, code: { text: `condition ${label}` } };
    case 'Group':
      return { resourceType: 'Group', type: 'person', actual: true, name: `cohort ${label}`, member: [{ entity: { reference: `Patient/${patientId}` } }] };
    case 'ImagingStudy':
      return { resourceType: 'ImagingStudy', status: 'available', subject: { reference: `Patient/${patientId}` }, description: `imaging ${label}` };
    case 'AuditEvent':
      return {
        resourceType: 'AuditEvent',
        type: { code: 'rest' },
        recorded: new Date().toISOString(),
        agent: [{ requestor: true, who: { display: label } }],
        source: { observer: { display: label } },
      };
    default:
      throw new Error(`no fixture resource for ${type}`);
  }
}

/** Seeds one project: a study stored by a member (or admin), FHIR resources written by members. */
async function seedProject(t: TestApp, key: ProjectKey, projectId: string, storer: 'data-manager' | 'admin'): Promise<ProjectData> {
  const label = `${key}${tag()}`;
  const dm = await t.token('data-manager', [projectId]);
  const researcher = await t.token('researcher', [projectId]);
  const patientName = `Proj${label}^Dicom${label}`;
  const patientID = `PID-${label}`;
  const instance = syntheticInstance({ patientName, patientID });
  const storerToken = storer === 'admin' ? t.adminToken : dm;
  const study = await storeStudy(t, storerToken, projectId, instance);
  const derived = await t.app.db
    .knex('studies as st')
    .join('patients as p', 'p.id', 'st.patient_pk')
    .where('st.study_uid', study.study)
    .first('st.fhir_id as imagingStudy', 'p.fhir_id as patient', 'st.accession_number as accession', 'st.study_description as description');
  const patient = await createResource(t, dm, resourceOf('Patient', '', label));
  const condition = await createResource(t, dm, resourceOf('Condition', patient, label));
  const group = await createResource(t, researcher, resourceOf('Group', patient, label));
  return {
    id: projectId,
    study,
    fhir: { Patient: patient, ImagingStudy: derived.imagingStudy, Condition: condition, Group: group, dicomPatient: derived.patient },
    markers: [
      study.study,
      study.series,
      study.sop,
      `Proj${label}`,
      `Dicom${label}`,
      patientID,
      derived.accession,
      derived.description,
      patient,
      derived.imagingStudy,
      derived.patient,
      condition,
      group,
      `Fam${label}`,
      `condition ${label}`,
      `cohort ${label}`,
    ],
  };
}

/** Both projects: A stored by its data manager, B by an admin naming the project. */
export async function seedProjects(t: TestApp): Promise<Record<ProjectKey, ProjectData>> {
  const run = tag();
  const A = await seedProject(t, 'A', `pa-${run}`, 'data-manager');
  const B = await seedProject(t, 'B', `pb-${run}`, 'admin');
  return { A, B };
}

/** Every caller of the matrix: anonymous, four refused tokens, four roles in each project. */
export async function makeCallers(t: TestApp, projects: Record<ProjectKey, ProjectData>): Promise<Caller[]> {
  const auth = t.config.auth;
  const keys = t.app.auth.keys;
  const key = await keys.current();
  const past = Math.floor(Date.now() / 1000) - 7200;
  const expired = await new SignJWT({ role: 'admin', scope: 'user/*.cruds', projects: [] })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'at+jwt' })
    .setIssuer(auth.issuer)
    .setAudience(auth.audience)
    .setSubject('expired-admin')
    .setJti(`expired-${tag()}`)
    .setIssuedAt(past)
    .setExpirationTime(past + 600)
    .sign(key.privateKey);
  const otherAudience = (await issueAccessToken({ keys, config: { ...auth, audience: 'https://elsewhere.example' } }, { subject: 'aud-admin', role: 'admin', scope: 'user/*.cruds', projects: [] }, 600)).accessToken;
  const now = Math.floor(Date.now() / 1000);
  const unsigned = unsignedJwt({ iss: auth.issuer, aud: auth.audience, sub: 'mallory', role: 'admin', scope: 'user/*.cruds', projects: [], jti: tag(), iat: now, exp: now + 600 });
  const tampered = tamperJwt(await t.token('researcher', [projects.A.id]), (c) => ({ ...c, role: 'admin', projects: [projects.A.id, projects.B.id] }));
  const callers: Caller[] = [
    { kind: 'anonymous', label: 'anonymous' },
    { kind: 'bad-token', label: 'expired token', token: expired },
    { kind: 'bad-token', label: 'wrong audience', token: otherAudience },
    { kind: 'bad-token', label: 'alg none', token: unsigned },
    { kind: 'bad-token', label: 'tampered signature', token: tampered },
  ];
  for (const project of ['A', 'B'] as const) {
    for (const role of ROLES) {
      callers.push({ kind: 'member', label: `${role}@${project}`, role, project, token: await t.token(role, [projects[project].id]) });
    }
  }
  return callers;
}

/** A Study Instance UID no study has. */
export const missingUid = (): string => newUid();

/** A FHIR id no resource has. */
export const missingId = (): string => `missing-${tag()}${tag()}`;
