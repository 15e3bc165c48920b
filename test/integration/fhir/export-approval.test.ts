/**
 * Cohort exports wait for their principal investigator (issue 5: PIs approve cohort exports of
 * their projects): a researcher's bulk export is accepted but runs only once a PI of each of its
 * projects approves it; one refusal ends it, and the requester's poll says why. PIs see and
 * decide only the exports of their projects. An approval taken by another process runs there.
 */
import request from 'supertest';
import pino from 'pino';
import { createApp, shutdownApp, type AppHandle } from '../../../src/app';
import type { Role } from '../../../src/auth/roles';
import { startTestApp, testDbKind, type TestApp } from '../../helpers/test-app';

const SENTINEL = 'PHI_SENTINEL_APPROVAL';

describe('cohort exports wait for a PI of their projects', () => {
  let t: TestApp;
  const ids: Record<string, string> = {};
  const tokens: Record<string, string> = {};
  const as = (name: string) => ({ Authorization: `Bearer ${tokens[name]}` });
  const mint = (subject: string, role: Role, projects: string[]) => t.tokenOf(subject, role, projects);

  const kickOff = async (token: string, path = `/fhir/Group/${ids.group}/$export`) => {
    const res = await request(t.http).get(path).set({ Authorization: `Bearer ${token}`, Accept: 'application/fhir+json', Prefer: 'respond-async' });
    expect(res.status).toBe(202);
    const status = new URL(res.headers['content-location']).pathname;
    return { status, id: status.split('/').pop() as string, body: res.body };
  };
  const poll = (status: string, token: string, http: Parameters<typeof request>[0] = t.http) => request(http).get(status).set('Authorization', `Bearer ${token}`);
  const pollUntilDone = async (status: string, token: string) => {
    let res = await poll(status, token);
    for (let i = 0; res.status === 202 && i < 200; i++) {
      await new Promise((r) => setTimeout(r, 50));
      res = await poll(status, token);
    }
    return res;
  };
  const download = async (url: string, token: string) => {
    const res = await request(t.http)
      .get(new URL(url).pathname)
      .set('Authorization', `Bearer ${token}`)
      .buffer(true)
      .parse((r, cb) => {
        let text = '';
        r.on('data', (c: Buffer) => (text += c.toString('utf8')));
        r.on('end', () => cb(null, text));
      });
    expect(res.status).toBe(200);
    return res.body as string;
  };

  beforeAll(async () => {
    t = await startTestApp();
    const create = async (resource: Record<string, unknown>, project: string) => {
      const res = await request(t.http).post(`/fhir/${resource.resourceType}`).set({ 'Content-Type': 'application/fhir+json', 'X-Project': project }).send(resource);
      expect(res.status).toBe(201);
      return res.body.id as string;
    };
    ids.patientA = await create({ resourceType: 'Patient', name: [{ family: `${SENTINEL}-A` }], birthDate: '1961-02-03' }, 'ap-a');
    ids.patientB = await create({ resourceType: 'Patient', name: [{ family: `${SENTINEL}-B` }] }, 'ap-b');
    ids.group = await create({ resourceType: 'Group', type: 'person', actual: true, member: [{ entity: { reference: `Patient/${ids.patientA}` } }] }, 'ap-a');
    tokens.researcher = await mint('researcher@example.org', 'researcher', ['ap-a']);
    tokens.researcherAB = await mint('researcher-ab@example.org', 'researcher', ['ap-a', 'ap-b']);
    tokens.piA = await mint('pi-a@example.org', 'pi', ['ap-a']);
    tokens.piB = await mint('pi-b@example.org', 'pi', ['ap-b']);
  });
  afterAll(async () => {
    await t?.close();
  });

  test('a researcher\'s export waits, runs once a PI of its project approves it, and is de-identified', async () => {
    const { status, id, body } = await kickOff(tokens.researcher);
    expect(body.issue[0].diagnostics).toMatch(/principal investigator of project ap-a/);
    const waiting = await poll(status, tokens.researcher);
    expect(waiting.status).toBe(202);
    expect(waiting.headers['x-progress']).toMatch(/awaiting approval by a principal investigator of project ap-a/);
    expect(Number(waiting.headers['retry-after'])).toBeGreaterThanOrEqual(2);
    // It stays waiting: nothing runs it but an approval.
    await new Promise((r) => setTimeout(r, 300));
    expect((await poll(status, tokens.researcher)).status).toBe(202);

    const listed = await request(t.http).get('/admin/exports?state=awaiting-approval').set(as('piA'));
    expect(listed.status).toBe(200);
    const mine = listed.body.exports.find((e: { id: string }) => e.id === id);
    expect(mine).toMatchObject({ state: 'awaiting-approval', requester: 'researcher@example.org', requesterRole: 'researcher', projects: ['ap-a'], awaiting: ['ap-a'] });
    expect(mine.request).toMatch(new RegExp(`/fhir/Group/${ids.group}/\\$export$`));
    // What it reads is shown as kept at kick-off: the Group and how many patients it covers.
    expect(mine.reads).toEqual({ level: 'group', groupId: ids.group, patients: 1 });

    const approved = await request(t.http).post(`/admin/exports/${id}/approve`).set(as('piA'));
    expect(approved.status).toBe(200);
    expect(approved.body.approvals).toEqual([expect.objectContaining({ project: 'ap-a', by: 'pi-a@example.org', role: 'pi' })]);
    const done = await pollUntilDone(status, tokens.researcher);
    expect(done.status).toBe(200);
    const manifest = JSON.parse(done.text);
    const patients = manifest.output.filter((o: { type: string }) => o.type === 'Patient');
    expect(patients).toHaveLength(1);
    const text = await download(patients[0].url, tokens.researcher);
    expect(text.split('\n').filter(Boolean).map((l) => JSON.parse(l).id)).toEqual([ids.patientA]);
    expect(text).not.toContain(SENTINEL);
    expect(text).not.toContain('1961-02-03');
    // The transactionTime is the approval's: the data exported is the data as it was then.
    expect(Date.parse(manifest.transactionTime)).toBeGreaterThan(Date.parse(approved.body.createdAt) + 250);
  });

  test('a PI of another project neither sees nor decides it', async () => {
    const { status, id } = await kickOff(tokens.researcher);
    const listed = await request(t.http).get('/admin/exports').set(as('piB'));
    expect(listed.status).toBe(200);
    expect(listed.body.exports.map((e: { id: string }) => e.id)).not.toContain(id);
    for (const res of [await request(t.http).get(`/admin/exports/${id}`).set(as('piB')), await request(t.http).post(`/admin/exports/${id}/approve`).set(as('piB'))]) {
      expect(res.status).toBe(404);
      expect(res.body.resourceType).toBe('OperationOutcome');
    }
    expect((await poll(status, tokens.researcher)).status).toBe(202);
    // Researchers and data managers decide nothing.
    expect((await request(t.http).post(`/admin/exports/${id}/approve`).set(as('researcher'))).status).toBe(403);
    expect((await poll(status, tokens.researcher)).status).toBe(202);
  });

  test('an export of two projects runs only once a PI of each has approved it', async () => {
    const { status, id } = await kickOff(tokens.researcherAB, '/fhir/Patient/$export?_type=Patient');
    const first = await request(t.http).post(`/admin/exports/${id}/approve`).set(as('piA'));
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ state: 'awaiting-approval', awaiting: ['ap-b'] });
    expect(first.body.reads).toEqual({ level: 'patient', types: ['Patient'] });
    const again = await request(t.http).post(`/admin/exports/${id}/approve`).set(as('piA'));
    expect(again.status).toBe(409);
    await new Promise((r) => setTimeout(r, 200));
    const waiting = await poll(status, tokens.researcherAB);
    expect(waiting.status).toBe(202);
    expect(waiting.headers['x-progress']).toMatch(/project ap-b$/);
    expect((await request(t.http).post(`/admin/exports/${id}/approve`).set(as('piB'))).status).toBe(200);
    const done = await pollUntilDone(status, tokens.researcherAB);
    expect(done.status).toBe(200);
    const manifest = JSON.parse(done.text);
    const ids2 = (await Promise.all(manifest.output.map((o: { url: string }) => download(o.url, tokens.researcherAB)))).flatMap((text) =>
      (text as string).split('\n').filter(Boolean).map((l) => JSON.parse(l).id),
    );
    expect(ids2.sort()).toEqual([ids.patientA, ids.patientB].sort());
  });

  test('a refusal ends the export; its poll answers 403 with the reason, and it can no longer be approved', async () => {
    const { status, id } = await kickOff(tokens.researcher);
    const refused = await request(t.http).post(`/admin/exports/${id}/refuse`).set(as('piA')).send({ reason: 'no IRB approval for this cohort yet' });
    expect(refused.status).toBe(200);
    expect(refused.body).toMatchObject({ state: 'refused', refusal: { by: 'pi-a@example.org', project: 'ap-a', reason: 'no IRB approval for this cohort yet' } });
    const res = await poll(status, tokens.researcher);
    expect(res.status).toBe(403);
    expect(res.body.resourceType).toBe('OperationOutcome');
    expect(res.body.issue[0].diagnostics).toBe('The export was refused by a principal investigator of project ap-a: no IRB approval for this cohort yet');
    expect((await request(t.http).post(`/admin/exports/${id}/approve`).set(as('piA'))).status).toBe(409);
    expect((await poll(status, tokens.researcher)).status).toBe(403);
  });

  test('a PI\'s and an admin\'s own exports run at once; an admin approves any export', async () => {
    const { status } = await kickOff(tokens.piA);
    expect((await pollUntilDone(status, tokens.piA)).status).toBe(200);
    const waiting = await kickOff(tokens.researcher);
    const approved = await request(t.http).post(`/admin/exports/${waiting.id}/approve`);
    expect(approved.status).toBe(200);
    expect(approved.body.state).toBe('accepted');
    expect((await pollUntilDone(waiting.status, tokens.researcher)).status).toBe(200);
  });

  test('the requester can cancel a waiting export', async () => {
    const { status, id } = await kickOff(tokens.researcher);
    expect((await request(t.http).delete(status).set(as('researcher'))).status).toBe(202);
    expect((await poll(status, tokens.researcher)).status).toBe(404);
    expect((await request(t.http).post(`/admin/exports/${id}/approve`).set(as('piA'))).status).toBe(404);
  });

  test('bad requests to the approval API are OperationOutcomes', async () => {
    const badState = await request(t.http).get('/admin/exports?state=sleeping').set(as('piA'));
    expect(badState.status).toBe(400);
    expect(badState.body.resourceType).toBe('OperationOutcome');
    expect((await request(t.http).post('/admin/exports/not-a-uuid/approve').set(as('piA'))).status).toBe(404);
    const { id } = await kickOff(tokens.researcher);
    const longReason = await request(t.http).post(`/admin/exports/${id}/refuse`).set(as('piA')).send({ reason: 'x'.repeat(501) });
    expect(longReason.status).toBe(400);
    expect((await request(t.http).get(`/admin/exports/${id}`).set(as('piA'))).body.state).toBe('awaiting-approval');
  });

  test('one token has at most 5 exports waiting or running; a sixth is refused (429) until one ends', async () => {
    const busy = await mint('busy@example.org', 'researcher', ['ap-a']);
    const waiting = [];
    for (let i = 0; i < 5; i++) waiting.push(await kickOff(busy));
    const refused = await request(t.http).get(`/fhir/Group/${ids.group}/$export`).set({ Authorization: `Bearer ${busy}`, Prefer: 'respond-async' });
    expect(refused.status).toBe(429);
    expect(refused.headers['retry-after']).toBeTruthy();
    expect(refused.body.resourceType).toBe('OperationOutcome');
    expect(refused.body.issue[0].code).toBe('throttled');
    // Another token is not held back by this one's.
    expect((await kickOff(tokens.researcherAB, '/fhir/Patient/$export?_type=Patient')).id).toBeTruthy();
    expect((await request(t.http).delete(waiting[0].status).set('Authorization', `Bearer ${busy}`)).status).toBe(202);
    expect((await kickOff(busy)).id).toBeTruthy();
  });

  (testDbKind() === 'postgres' ? test : test.skip)('an approval taken by another process runs the export there', async () => {
    const { status, id } = await kickOff(tokens.researcher);
    let other: AppHandle | undefined;
    try {
      other = await createApp(t.config, { logger: pino({ level: 'silent' }) });
      expect((await request(other.express).post(`/admin/exports/${id}/approve`).set(as('piA'))).status).toBe(200);
      let res = await poll(status, tokens.researcher, other.express);
      for (let i = 0; res.status === 202 && i < 200; i++) {
        await new Promise((r) => setTimeout(r, 50));
        res = await poll(status, tokens.researcher);
      }
      expect(res.status).toBe(200);
    } finally {
      if (other) await shutdownApp(other);
    }
  });

  test('with EXPORT_APPROVAL=none a researcher\'s export runs at once', async () => {
    const open = await startTestApp({ EXPORT_APPROVAL: 'none' });
    try {
      const token = await open.tokenOf('r@example.org', 'researcher', ['x']);
      const kick = await request(open.http).get('/fhir/$export').set({ Authorization: `Bearer ${token}`, Prefer: 'respond-async' });
      expect(kick.status).toBe(202);
      const path = new URL(kick.headers['content-location']).pathname;
      let res = await request(open.http).get(path).set('Authorization', `Bearer ${token}`);
      for (let i = 0; res.status === 202 && i < 200; i++) {
        await new Promise((r) => setTimeout(r, 50));
        res = await request(open.http).get(path).set('Authorization', `Bearer ${token}`);
      }
      expect(res.status).toBe(200);
    } finally {
      await open.close();
    }
  });
});
