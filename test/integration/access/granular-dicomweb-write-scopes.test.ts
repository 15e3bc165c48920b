/**
 * SMART App Launch 2.2 granular scopes on DICOMweb writes, which the policy governs as
 * ImagingStudy interactions: a `user/ImagingStudy.c?modality=OPT` token stores the instances that
 * match one of its c parameter sets and has the others refused one by one (FailureReason 0124H,
 * Refused: Not Authorized; nothing indexed, no blob kept), and a `d?modality=OPT` token deletes
 * only from studies whose ImagingStudy matches (403 for one it may read, 404 for one it may not).
 * Every outcome is audited, denials with their reason.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import request from 'supertest';
import type { AuditEvent } from '../../../src/audit/audit-event';
import { createInstanceScanner } from '../../../src/dicom/instance-scanner';
import { loadFhirDefinitions } from '../../../src/fhir/definitions';
import { INSTANCE_DERIVED_PARAMS, provisionalImagingStudy } from '../../../src/fhir/dicom/provisional-imaging-study';
import { extractIndexRows } from '../../../src/fhir/store/index-rows';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { sharedData, startTestApp, type TestApp } from '../../helpers/test-app';

/** FailureReason 0124H, Refused: Not Authorized (PS3.4 C-STORE status, PS3.7 C.4.2). */
const NOT_AUTHORIZED = 0x0124;

interface Instance {
  bytes: Buffer;
  studyInstanceUID: string;
  seriesInstanceUID: string;
  sopInstanceUID: string;
}
type DicomJson = Record<string, { Value?: unknown[] }>;

/** A fresh synthetic instance of `modality` in a new study (no public OPT instance exists: shared/data MANIFEST). */
const synthetic = (modality: string, studyInstanceUID = newUid()): Instance =>
  createSyntheticInstance({ studyInstanceUID, modality, patientID: `GW-${modality}-${studyInstanceUID.slice(-6)}`, rows: 16, columns: 16, bitsAllocated: 8 });

/** A real file of shared/data with its UIDs (read by the server's own scanner). */
async function realInstance(...parts: string[]): Promise<Instance> {
  const bytes = fs.readFileSync(sharedData('dicom', ...parts));
  const scanner = createInstanceScanner({ maxHeaderBytes: 16 << 20 });
  scanner.writable.end(bytes);
  const a = (await scanner.result).attributes;
  return { bytes, studyInstanceUID: a.studyInstanceUID, seriesInstanceUID: a.seriesInstanceUID, sopInstanceUID: a.sopInstanceUID };
}

describe('granular SMART scopes govern DICOMweb stores and deletes', () => {
  let t: TestApp;
  /** pydicom CT_small (CT): refused by every OPT-only scope below, never stored. */
  let realCT: Instance;
  /** dcmjs sample-op (OP, Heidelberg Spectralis SLO). */
  let realOP: Instance;

  const asToken = (token: string) => ({ Authorization: `Bearer ${token}` });
  const tokenWith = (scope: string) => t.token('admin', [], scope);
  const stow = async (token: string, instances: Instance[], requestId?: string) => {
    const { body, contentType } = buildMultipart(instances.map((i) => i.bytes));
    let r = request(t.http).post('/dicomweb/studies').set(asToken(token)).set('Content-Type', contentType);
    if (requestId) r = r.set('X-Request-Id', requestId);
    return r.send(body);
  };
  const failed = (res: request.Response): Array<{ sop?: string; reason: number }> =>
    ((res.body['00081198']?.Value ?? []) as DicomJson[]).map((f) => ({ sop: f['00081155'].Value?.[0] as string | undefined, reason: f['00081197'].Value![0] as number }));
  const referenced = (res: request.Response): string[] => ((res.body['00081199']?.Value ?? []) as DicomJson[]).map((f) => f['00081155'].Value![0] as string);
  const instancePath = (i: Instance) => `/dicomweb/studies/${i.studyInstanceUID}/series/${i.seriesInstanceUID}/instances/${i.sopInstanceUID}`;
  /** The studies an unrestricted admin finds by UID. */
  const qido = async (uid: string, token?: string): Promise<string[]> => {
    let r = request(t.http).get(`/dicomweb/studies?StudyInstanceUID=${uid}`);
    if (token) r = r.set(asToken(token));
    const res = await r;
    expect(res.status).toBe(200);
    return (res.body as DicomJson[]).map((s) => s['0020000D'].Value![0] as string);
  };
  const expectStored = async (i: Instance) => {
    expect(await qido(i.studyInstanceUID)).toEqual([i.studyInstanceUID]);
    expect((await request(t.http).get(`${instancePath(i)}/metadata`)).status).toBe(200);
  };
  /** Not indexed, not retrievable, not searchable, and no blob under its content address. */
  const expectNotStored = async (i: Instance) => {
    expect(await qido(i.studyInstanceUID)).toEqual([]);
    expect((await request(t.http).get(instancePath(i))).status).toBe(404);
    expect(await t.app.db.knex('instances').where({ sop_instance_uid: i.sopInstanceUID }).first()).toBeUndefined();
    const sha = createHash('sha256').update(i.bytes).digest('hex');
    expect(await t.app.db.knex('blobs').where({ key: sha }).first()).toBeUndefined();
    expect(await t.app.blobs.stat(sha)).toBeNull();
  };
  const auditOf = async (requestId: string): Promise<AuditEvent[]> => {
    const rows = await t.app.db.knex('audit_events').where({ request_id: requestId }).select('resource');
    return rows.map((r: { resource: AuditEvent | string }) => (typeof r.resource === 'string' ? JSON.parse(r.resource) : r.resource));
  };
  /** The Study Instance UIDs an AuditEvent names (DCM 110180). */
  const auditedStudies = (e: AuditEvent) => (e.entity ?? []).filter((x) => x.what?.identifier?.type?.coding?.[0]?.code === '110180').map((x) => x.what?.identifier?.value);

  beforeAll(async () => {
    t = await startTestApp({ ORPHAN_GRACE_SECONDS: '0' });
    realCT = await realInstance('modalities', 'pydicom__CT_small.dcm');
    realOP = await realInstance('ophthalmic', 'dcmjs__sample-op.dcm');
  });
  afterAll(async () => {
    await t?.close();
  });

  describe('STOW-RS: each instance against the c parameter sets', () => {
    test('an instance matching the scope is stored, and a token reading by the same parameters finds it', async () => {
      const token = await tokenWith('user/ImagingStudy.c?modality=OPT');
      const opt = synthetic('OPT');
      const res = await stow(token, [opt]);
      expect(res.status).toBe(200);
      expect(referenced(res)).toEqual([opt.sopInstanceUID]);
      await expectStored(opt);
      const reader = await tokenWith('user/ImagingStudy.rs?modality=OPT');
      expect(await qido(opt.studyInstanceUID, reader)).toEqual([opt.studyInstanceUID]);
    });

    test('an instance outside the scope is refused (0124H), not stored, audited as a denial', async () => {
      const token = await tokenWith('user/ImagingStudy.c?modality=OPT');
      const requestId = `gw-refused-${newUid()}`;
      const res = await stow(token, [realCT], requestId);
      expect(res.status).toBe(409);
      expect(failed(res)).toEqual([{ sop: realCT.sopInstanceUID, reason: NOT_AUTHORIZED }]);
      expect(res.headers.warning).toMatch(/limited by search parameters.*0x0124/);
      // The refusal names the restriction, nothing of the instance.
      expect(res.headers.warning).not.toMatch(/\bCT\b/);
      await expectNotStored(realCT);
      const [event, ...more] = await auditOf(requestId);
      expect(more).toEqual([]);
      expect(event).toMatchObject({ action: 'C', outcome: '4' });
      expect(event.outcomeDesc).toMatch(/^access denied: 1 of 1 instances refused: the scopes granting c on ImagingStudy are limited by search parameters/);
    });

    test('a request mixing both stores the matching instance and refuses the other (202)', async () => {
      const token = await tokenWith('user/ImagingStudy.c?modality=OPT');
      const opt = synthetic('OPT');
      const requestId = `gw-partial-${newUid()}`;
      const res = await stow(token, [realCT, opt], requestId);
      expect(res.status).toBe(202);
      expect(referenced(res)).toEqual([opt.sopInstanceUID]);
      expect(failed(res)).toEqual([{ sop: realCT.sopInstanceUID, reason: NOT_AUTHORIZED }]);
      await expectStored(opt);
      await expectNotStored(realCT);
      // One event: the study stored, and the denial with its count.
      const [event, ...more] = await auditOf(requestId);
      expect(more).toEqual([]);
      expect(event).toMatchObject({ action: 'C', outcome: '4' });
      expect(event.outcomeDesc).toMatch(/^access denied: 1 of 2 instances refused/);
      expect(auditedStudies(event)).toEqual([opt.studyInstanceUID]);
    });

    test('two scopes on ImagingStudy are a union', async () => {
      const token = await tokenWith('user/ImagingStudy.c?modality=OPT user/ImagingStudy.c?modality=OP');
      const opt = synthetic('OPT');
      const res = await stow(token, [opt, realOP, realCT]);
      expect(res.status).toBe(202);
      expect(referenced(res).sort()).toEqual([opt.sopInstanceUID, realOP.sopInstanceUID].sort());
      expect(failed(res)).toEqual([{ sop: realCT.sopInstanceUID, reason: NOT_AUTHORIZED }]);
      await expectStored(realOP);
      await expectNotStored(realCT);
    });

    test('an unrestricted c scope alongside lifts the restriction', async () => {
      const token = await tokenWith('user/ImagingStudy.c?modality=OPT user/ImagingStudy.c');
      const ct = synthetic('CT');
      const res = await stow(token, [ct]);
      expect(res.status).toBe(200);
      await expectStored(ct);
    });

    test('a set naming a parameter the server cannot evaluate grants nothing; another set still does', async () => {
      const opt = synthetic('OPT');
      for (const scope of ['user/ImagingStudy.c?modality=OPT&patient=Patient/123', 'user/ImagingStudy.c?no-such-parameter=1']) {
        const res = await stow(await tokenWith(scope), [opt]);
        expect(res.status).toBe(409);
        expect(failed(res)).toEqual([{ sop: opt.sopInstanceUID, reason: NOT_AUTHORIZED }]);
      }
      await expectNotStored(opt);
      const res = await stow(await tokenWith('user/ImagingStudy.c?no-such-parameter=1 user/ImagingStudy.c?modality=OPT'), [opt]);
      expect(res.status).toBe(200);
    });

    test("the values an instance is checked by are those of its study's ImagingStudy once stored", async () => {
      const opt = createSyntheticInstance({ studyInstanceUID: newUid(), modality: 'OPT', accessionNumber: 'ACC-GW1', studyDate: '20220607', laterality: 'L', extra: { BodyPartExamined: 'EYE' } });
      expect((await stow(t.adminToken, [opt])).status).toBe(200);
      const found = await request(t.http).get(`/fhir/ImagingStudy?identifier=urn:oid:${opt.studyInstanceUID}`);
      expect(found.body.entry).toHaveLength(1);
      const scanner = createInstanceScanner({ maxHeaderBytes: 1 << 20 });
      scanner.writable.end(opt.bytes);
      const instance = await scanner.result;
      const defs = loadFhirDefinitions();
      const shown = (rows: ReturnType<typeof extractIndexRows>) =>
        [...rows.token, ...rows.date].filter((r) => INSTANCE_DERIVED_PARAMS.has(r.param)).map((r) => JSON.stringify(r)).sort();
      expect(shown(extractIndexRows(defs, provisionalImagingStudy(instance.attributes, instance.dataset)))).toEqual(shown(extractIndexRows(defs, found.body.entry[0].resource)));
    });
  });

  describe('DELETE: the study against the d parameter sets', () => {
    const studyPath = (i: Instance) => `/dicomweb/studies/${i.studyInstanceUID}`;
    const expectRefused = (res: request.Response) => {
      expect(res.status).toBe(403);
      expect(res.body['00000902'].Value[0]).toMatch(/^access denied: the scopes granting d on ImagingStudy are limited by search parameters/);
      expect(res.headers['www-authenticate']).toMatch(/insufficient_scope/);
    };

    test('a study whose ImagingStudy matches is deleted (204)', async () => {
      const opt = synthetic('OPT');
      expect((await stow(t.adminToken, [opt])).status).toBe(200);
      const token = await tokenWith('user/ImagingStudy.rs user/ImagingStudy.d?modality=OPT');
      const requestId = `gw-delete-${newUid()}`;
      const res = await request(t.http).delete(studyPath(opt)).set(asToken(token)).set('X-Request-Id', requestId);
      expect(res.status).toBe(204);
      expect(await qido(opt.studyInstanceUID)).toEqual([]);
      expect((await request(t.http).get(`${studyPath(opt)}/metadata`)).status).toBe(404);
      const [event] = await auditOf(requestId);
      expect(event).toMatchObject({ action: 'D', outcome: '0' });
    });

    test('a study it may read whose ImagingStudy does not match is refused (403), stays, and the denial is audited', async () => {
      const ct = synthetic('CT');
      expect((await stow(t.adminToken, [ct])).status).toBe(200);
      const token = await tokenWith('user/ImagingStudy.rs user/ImagingStudy.d?modality=OPT');
      const requestId = `gw-delete-refused-${newUid()}`;
      expectRefused(await request(t.http).delete(studyPath(ct)).set(asToken(token)).set('X-Request-Id', requestId));
      expectRefused(await request(t.http).delete(`${studyPath(ct)}/series/${ct.seriesInstanceUID}`).set(asToken(token)));
      expectRefused(await request(t.http).delete(instancePath(ct)).set(asToken(token)));
      await expectStored(ct);
      const [event, ...more] = await auditOf(requestId);
      expect(more).toEqual([]);
      expect(event).toMatchObject({ action: 'D', outcome: '4' });
      expect(event.outcomeDesc).toMatch(/^access denied: the scopes granting d on ImagingStudy/);
    });

    test('a study it may not read answers as a missing one (404), and stays', async () => {
      const ct = synthetic('CT');
      expect((await stow(t.adminToken, [ct])).status).toBe(200);
      for (const scope of ['user/ImagingStudy.rs?modality=OPT user/ImagingStudy.d?modality=OPT', 'user/ImagingStudy.d?modality=OPT']) {
        const token = await tokenWith(scope);
        const hidden = await request(t.http).delete(studyPath(ct)).set(asToken(token));
        const missing = await request(t.http).delete(`/dicomweb/studies/${newUid()}`).set(asToken(token));
        expect(hidden.status).toBe(404);
        expect(missing.status).toBe(404);
        expect(hidden.body['00000902'].Value[0].replace(ct.studyInstanceUID, '*')).toBe(missing.body['00000902'].Value[0].replace(/study \S+/, 'study *'));
      }
      await expectStored(ct);
    });

    test('several d scopes are a union; an unrestricted one lifts them', async () => {
      const [ct, mr] = [synthetic('CT'), synthetic('MR')];
      expect((await stow(t.adminToken, [ct, mr])).status).toBe(200);
      const union = await tokenWith('user/ImagingStudy.rs user/ImagingStudy.d?modality=OPT user/ImagingStudy.d?modality=CT');
      expect((await request(t.http).delete(studyPath(ct)).set(asToken(union))).status).toBe(204);
      expectRefused(await request(t.http).delete(studyPath(mr)).set(asToken(union)));
      const lifted = await tokenWith('user/ImagingStudy.rs user/ImagingStudy.d?modality=OPT user/ImagingStudy.d');
      expect((await request(t.http).delete(studyPath(mr)).set(asToken(lifted))).status).toBe(204);
    });

    test('a study changed a moment ago is judged by its ImagingStudy as it is now', async () => {
      // An OPT study that has just received a CT instance: `d?modality=CT` now reaches it.
      const uid = newUid();
      expect((await stow(t.adminToken, [synthetic('OPT', uid)])).status).toBe(200);
      expect((await request(t.http).get(`/fhir/ImagingStudy?identifier=urn:oid:${uid}`)).body.entry).toHaveLength(1);
      expect((await stow(t.adminToken, [synthetic('CT', uid)])).status).toBe(200);
      const token = await tokenWith('user/ImagingStudy.rs user/ImagingStudy.d?modality=CT');
      expect((await request(t.http).delete(`/dicomweb/studies/${uid}`).set(asToken(token))).status).toBe(204);
    });
  });
});
