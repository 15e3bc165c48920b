import { SignJWT } from 'jose';
import request from 'supertest';
import { issueAccessToken } from '../../../src/auth/access-token';
import { mintLocalToken } from '../../../src/auth/local-token';
import { restrictStudiesToProjects } from '../../../src/auth/project-filters';
import { createProject, linkStudyToProjects } from '../../../src/auth/project-store';
import { searchForStudies } from '../../../src/dicomweb/qido-rs';
import { tamperJwt, unsignedJwt } from '../../helpers/tokens';
import { ISSUER, startAuthTestApp, type AuthTestApp } from './auth-test-app';

/** Inserts a minimal indexed study (the DICOM index tables) and returns its primary key. */
async function insertStudy(t: AuthTestApp, uid: string): Promise<number> {
  const knex = t.base.app.db.knex;
  const [patient] = await knex('patients').insert({ identity_key: `|${uid}`, patient_id: `P-${uid}` }).returning('id');
  const [study] = await knex('studies').insert({ study_uid: uid, patient_pk: patient.id ?? patient, patient_id: `P-${uid}`, study_date: '2026-01-02', dataset: JSON.stringify({ '0020000D': { vr: 'UI', Value: [uid] } }) }).returning('id');
  return Number(study.id ?? study);
}

describe('the access guard in front of the protocol routers', () => {
  let t: AuthTestApp;
  beforeAll(async () => {
    t = await startAuthTestApp();
    const knex = t.base.app.db.knex;
    await createProject(knex, { id: 'p-a', name: 'A' });
    await createProject(knex, { id: 'p-b', name: 'B' });
    await linkStudyToProjects(knex, await insertStudy(t, '1.2.826.0.1.1'), ['p-a']);
    await linkStudyToProjects(knex, await insertStudy(t, '1.2.826.0.1.2'), ['p-b']);
    await linkStudyToProjects(knex, await insertStudy(t, '1.2.826.0.1.3'), ['p-a', 'p-b']);
  });
  afterAll(async () => {
    await t?.close();
  });
  const mint = (role: 'admin' | 'data-manager' | 'researcher' | 'pi', projects: string[] = [], scope?: string) =>
    mintLocalToken({ role, projects, scope }, { config: t.config, keys: t.auth.keys }).then((r) => r.accessToken);

  describe('authentication', () => {
    test('anonymous FHIR request: 401, WWW-Authenticate realm, OperationOutcome body', async () => {
      const res = await request(t.http).get('/fhir/Patient/1');
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toBe('Bearer realm="imaging-lake"');
      expect(res.headers['content-type']).toMatch(/application\/fhir\+json/);
      expect(res.body).toEqual({
        resourceType: 'OperationOutcome',
        issue: [{ severity: 'error', code: 'login', diagnostics: 'authentication required: send Authorization: Bearer <token>' }],
      });
    });

    test('anonymous DICOMweb request: 401 with a DICOM JSON ErrorComment', async () => {
      const res = await request(t.http).get('/dicomweb/studies');
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toBe('Bearer realm="imaging-lake"');
      expect(res.headers['content-type']).toMatch(/application\/dicom\+json/);
      expect(JSON.parse(res.text)).toEqual({ '00000902': { vr: 'LO', Value: ['authentication required: send Authorization: Bearer <token>'] } });
    });

    test('an expired token: 401 invalid_token', async () => {
      const key = await t.auth.keys.current();
      const past = Math.floor(Date.now() / 1000) - 7200;
      const token = await new SignJWT({ role: 'admin', scope: 'user/*.cruds', projects: [] })
        .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'at+jwt' })
        .setIssuer(ISSUER)
        .setAudience(ISSUER)
        .setSubject('old')
        .setJti('old-1')
        .setIssuedAt(past)
        .setExpirationTime(past + 600)
        .sign(key.privateKey);
      const res = await request(t.http).get('/fhir/Patient/1').set('Authorization', `Bearer ${token}`);
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toBe('Bearer realm="imaging-lake", error="invalid_token", error_description="token expired"');
      expect(res.body.issue[0].diagnostics).toBe('token expired');
    });

    test('a token for another audience: 401 invalid_token', async () => {
      const t2 = await issueAccessToken({ keys: t.auth.keys, config: { ...t.config, audience: 'https://other' } }, { subject: 'x', role: 'admin', scope: 'user/*.cruds', projects: [] }, 60);
      const res = await request(t.http).get('/fhir/Patient/1').set('Authorization', `Bearer ${t2.accessToken}`);
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toMatch(/error="invalid_token"/);
      expect(res.body.issue[0].diagnostics).toBe('token claim "aud" invalid');
    });

    test('an alg:none token: 401 invalid_token', async () => {
      const now = Math.floor(Date.now() / 1000);
      const token = unsignedJwt({ iss: ISSUER, aud: ISSUER, sub: 'mallory', role: 'admin', scope: 'user/*.cruds', projects: [], jti: 'n', iat: now, exp: now + 60 });
      const res = await request(t.http).get('/fhir/Patient/1').set('Authorization', `Bearer ${token}`);
      expect(res.status).toBe(401);
      expect(res.body.issue[0].diagnostics).toBe('unsigned tokens are not accepted');
    });

    test('a tampered token: 401 invalid_token', async () => {
      const token = tamperJwt(await mint('researcher', ['p-a']), (c) => ({ ...c, role: 'admin' }));
      const res = await request(t.http).get('/dicomweb/studies').set('Authorization', `Bearer ${token}`);
      expect(res.status).toBe(401);
      expect(JSON.parse(res.text)['00000902'].Value[0]).toBe('token signature invalid');
    });

    test('a malformed Authorization header: 401 invalid_request', async () => {
      const res = await request(t.http).get('/fhir/Patient/1').set('Authorization', 'Basic dXNlcjpwYXNz');
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toMatch(/error="invalid_request"/);
    });

    test('a valid token reaches the route with the principal attached and the view decided', async () => {
      const res = await request(t.http).get('/fhir/Patient/1').set('Authorization', `Bearer ${await mint('researcher', ['p-a'])}`);
      expect(res.status).toBe(200);
      expect(res.body.meta.tag[0].code).toBe('deidentified');
    });

    test('public paths need no token', async () => {
      expect((await request(t.http).get('/healthz')).status).toBe(200);
      expect((await request(t.http).get('/fhir/.well-known/smart-configuration')).status).toBe(200);
      expect((await request(t.http).get('/oauth2/jwks')).status).toBe(200);
    });
  });

  describe('authorization', () => {
    /** QIDO-RS through the service with the restriction the guard computes (the route wiring is the lead's one-liner). */
    const qido = async (projects: string[] | 'all', query: Record<string, string> = {}) => {
      const restrictStudies = projects === 'all' ? undefined : restrictStudiesToProjects(projects);
      const res = await searchForStudies({ db: t.base.app.db } as Parameters<typeof searchForStudies>[0], { query, dicomwebBaseUrl: 'http://il.test/dicomweb' }, { restrictStudies });
      return res.body.map((s) => (s['0020000D'] as { Value: string[] }).Value[0]).sort();
    };

    test('QIDO-RS rows are restricted to the projects of the decision (many-to-many)', async () => {
      expect(await qido(['p-a'])).toEqual(['1.2.826.0.1.1', '1.2.826.0.1.3']);
      expect(await qido(['p-b'])).toEqual(['1.2.826.0.1.2', '1.2.826.0.1.3']);
      expect(await qido([])).toEqual([]);
      expect(await qido('all')).toEqual(['1.2.826.0.1.1', '1.2.826.0.1.2', '1.2.826.0.1.3']);
    });

    test('a search by exact PatientID (fenced filter, a probe per study) finds exactly what the semi-join of a list finds', async () => {
      for (const uid of ['1.2.826.0.1.1', '1.2.826.0.1.2', '1.2.826.0.1.3']) {
        for (const projects of [['p-a'], ['p-b'], ['p-a', 'p-b'], []]) {
          expect(await qido(projects, { PatientID: `P-${uid}` })).toEqual((await qido(projects)).filter((u) => u === uid));
        }
      }
      expect(await qido(['p-a'], { PatientID: 'P-1.2.826.0.1.2' })).toEqual([]);
      expect(await qido(['p-b'], { PatientID: 'P-1.2.826.0.1.2' })).toEqual(['1.2.826.0.1.2']);
      expect(await qido(['p-a'], { PatientID: 'P-1.2.826.0.1.3' })).toEqual(['1.2.826.0.1.3']);
    });

    test('the guard hands the DICOMweb routes res.locals.restrictStudies for the caller\'s projects', async () => {
      const visible = async (token: string) =>
        (await request(t.http).get('/dicomweb/probe/visible-studies').set('Authorization', `Bearer ${token}`)).body as string[];
      expect(await visible(await mint('researcher', ['p-a']))).toEqual(['1.2.826.0.1.1', '1.2.826.0.1.3']);
      expect(await visible(await mint('pi', ['p-b']))).toEqual(['1.2.826.0.1.2', '1.2.826.0.1.3']);
      expect(await visible(await mint('admin'))).toEqual(['1.2.826.0.1.1', '1.2.826.0.1.2', '1.2.826.0.1.3']);
    });

    test('a researcher may not delete: 403 with a DICOM JSON body', async () => {
      const res = await request(t.http).delete('/dicomweb/studies/1.2.826.0.1.1').set('Authorization', `Bearer ${await mint('researcher', ['p-a'], 'user/*.rs')}`);
      expect(res.status).toBe(403);
      expect(JSON.parse(res.text)['00000902'].Value[0]).toMatch(/^access denied: role researcher may not delete/);
    });

    test('a token whose scopes do not cover the type: 403 insufficient_scope (FHIR body)', async () => {
      const res = await request(t.http).get('/fhir/Patient/1').set('Authorization', `Bearer ${await mint('researcher', ['p-a'], 'user/ImagingStudy.rs')}`);
      expect(res.status).toBe(403);
      expect(res.headers['www-authenticate']).toMatch(/error="insufficient_scope"/);
      expect(res.body).toEqual({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'forbidden', diagnostics: 'access denied: no scope grants r on Patient' }] });
    });

    test('STOW into a project the data manager is not in: 403', async () => {
      const res = await request(t.http)
        .post('/dicomweb/studies?project=p-b')
        .set('Authorization', `Bearer ${await mint('data-manager', ['p-a'])}`)
        .set('Content-Type', 'multipart/related; type="application/dicom"; boundary=x')
        .send('--x--');
      expect(res.status).toBe(403);
      expect(JSON.parse(res.text)['00000902'].Value[0]).toBe('access denied: not a member of project p-b');
    });

    test('other paths are administration: admin only', async () => {
      expect((await request(t.http).get('/admin/x').set('Authorization', `Bearer ${await mint('data-manager', ['p-a'])}`)).status).toBe(403);
      expect((await request(t.http).get('/admin/x').set('Authorization', `Bearer ${await mint('admin')}`)).status).toBe(404);
    });
  });
});
