import fs from 'node:fs/promises';
import path from 'node:path';
import request from 'supertest';
import { mintLocalToken } from '../../../src/auth/local-token';
import { restrictStudiesToProjects } from '../../../src/auth/project-filters';
import { createProject, linkStudyToProjects } from '../../../src/auth/project-store';
import { tamperJwt } from '../../helpers/tokens';
import { startAuthTestApp, type AuthTestApp } from './auth-test-app';

/** Inserts a minimal indexed study (the DICOM index tables) and returns its primary key. */
async function insertStudy(t: AuthTestApp, uid: string): Promise<number> {
  const knex = t.base.app.db.knex;
  const [patient] = await knex('patients').insert({ identity_key: `|${uid}`, patient_id: `P-${uid}` }).returning('id');
  const [study] = await knex('studies').insert({ study_uid: uid, patient_pk: patient.id ?? patient, patient_id: `P-${uid}`, study_date: '2026-01-02', dataset: JSON.stringify({ '0020000D': { vr: 'UI', Value: [uid] } }) }).returning('id');
  return Number(study.id ?? study);
}

describe('the guard with cached tokens', () => {
  let t: AuthTestApp;
  beforeAll(async () => {
    // No clock tolerance: an expired token is refused the moment it expires.
    t = await startAuthTestApp({ AUTH_CLOCK_TOLERANCE_SECONDS: '0' });
  });
  afterAll(async () => {
    await t?.close();
  });
  const mint = (role: 'admin' | 'researcher', projects: string[] = [], ttlSeconds?: number) =>
    mintLocalToken({ role, projects, ttlSeconds }, { config: t.config, keys: t.auth.keys });
  const qido = (token: string) => request(t.http).get('/dicomweb/studies').set('Authorization', `Bearer ${token}`).set('Accept', 'application/dicom+json');

  test('a token used many times keeps working, and a forged twin of it is refused with invalid_token', async () => {
    const { accessToken } = await mint('researcher', ['p-cache']);
    for (let i = 0; i < 3; i++) expect((await qido(accessToken)).status).toBe(200);
    const forged = tamperJwt(accessToken, (c) => ({ ...c, role: 'admin', projects: [] }));
    const res = await qido(forged);
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toMatch(/error="invalid_token"/);
    expect(JSON.parse(res.text)['00000902'].Value[0]).toBe('token signature invalid');
  });

  test('a cached token is refused once it expires', async () => {
    // exp is whole seconds from a whole-second iat: ttl 2 leaves at least one second to use it in.
    const issued = await mint('researcher', ['p-cache'], 2);
    expect((await qido(issued.accessToken)).status).toBe(200);
    expect(t.config.clockToleranceSeconds).toBe(0);
    await new Promise((r) => setTimeout(r, issued.expiresAt * 1000 - Date.now() + 50));
    const res = await qido(issued.accessToken);
    expect(res.status).toBe(401);
    expect(JSON.parse(res.text)['00000902'].Value[0]).toBe('token expired');
  });

  test('withdrawing the signing key stops the tokens it signed, cached or not', async () => {
    const { accessToken } = await mint('admin');
    expect((await qido(accessToken)).status).toBe(200);
    const kid = (await t.auth.keys.current()).kid;
    for (const f of await fs.readdir(t.config.keyDir)) if (f.endsWith(`-${kid}.json`)) await fs.unlink(path.join(t.config.keyDir, f));
    await t.auth.keys.rotate();
    const res = await qido(accessToken);
    expect(res.status).toBe(401);
    expect(JSON.parse(res.text)['00000902'].Value[0]).toBe('token signed by an unknown key');
    // Tokens of the new key work.
    expect((await qido((await mint('admin')).accessToken)).status).toBe(200);
  });
});

describe('study restriction on a column (correlated EXISTS)', () => {
  let t: AuthTestApp;
  const pks: Record<string, number> = {};
  beforeAll(async () => {
    t = await startAuthTestApp();
    const knex = t.base.app.db.knex;
    await createProject(knex, { id: 'col-a', name: 'A' });
    await createProject(knex, { id: 'col-b', name: 'B' });
    pks.a = await insertStudy(t, '1.2.826.0.1.71');
    pks.b = await insertStudy(t, '1.2.826.0.1.72');
    pks.ab = await insertStudy(t, '1.2.826.0.1.73');
    await linkStudyToProjects(knex, pks.a, ['col-a']);
    await linkStudyToProjects(knex, pks.b, ['col-b']);
    await linkStudyToProjects(knex, pks.ab, ['col-a', 'col-b']);
    await createProject(knex, { id: 'col-n', name: 'North', facility: 'north' });
    pks.n = await insertStudy(t, '1.2.826.0.1.74');
    await linkStudyToProjects(knex, pks.n, ['col-n']);
  });
  afterAll(async () => {
    await t?.close();
  });
  const both = async (projects: string[]) => {
    const knex = t.base.app.db.knex;
    const r = restrictStudiesToProjects(projects);
    const viaSubquery = (await knex('studies as st').whereIn('st.id', (sub) => { sub.select('studies.id').from('studies'); r(sub); }).pluck('st.study_uid')).sort();
    const viaColumn = (await knex('studies as st').where((qb) => r.onColumn!(qb, 'st.id')).pluck('st.study_uid')).sort();
    return { viaSubquery, viaColumn };
  };

  test('selects the same studies as the subquery form', async () => {
    for (const projects of [['col-a'], ['col-b'], ['col-a', 'col-b']]) {
      const { viaSubquery, viaColumn } = await both(projects);
      expect(viaColumn).toEqual(viaSubquery);
    }
    expect((await both(['col-a'])).viaColumn).toEqual(['1.2.826.0.1.71', '1.2.826.0.1.73']);
  });

  test('with a facility, only the studies of the listed projects at that facility', async () => {
    const knex = t.base.app.db.knex;
    const at = async (facility: string) => {
      const r = restrictStudiesToProjects(['col-a', 'col-n'], { facility });
      return (await knex('studies as st').where((qb) => r.onColumn!(qb, 'st.id')).pluck('st.study_uid')).sort();
    };
    expect(await at('north')).toEqual(['1.2.826.0.1.74']);
    expect(await at('south')).toEqual([]);
  });

  test('no project matches nothing', async () => {
    expect(await both([])).toEqual({ viaSubquery: [], viaColumn: [] });
  });

  test('an unsafe column name is refused', () => {
    const r = restrictStudiesToProjects(['col-a']);
    expect(() => r.onColumn!(t.base.app.db.knex('studies as st'), 'st.id; drop table studies')).toThrow(/unsafe column/);
  });
});
