import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import { createHash } from 'node:crypto';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { sharedData, startTestApp, type TestApp } from '../../helpers/test-app';

type Json = Record<string, { vr: string; Value?: any[] }>;

const referenced = (body: Json) => (body['00081199']?.Value ?? []) as Json[];
const failed = (body: Json) => (body['00081198']?.Value ?? []) as Json[];
const value = (item: Json, tag: string) => item[tag]?.Value?.[0];

function post(t: TestApp, parts: Buffer[], path = '/dicomweb/studies', opts: Parameters<typeof buildMultipart>[1] = {}) {
  const { body, contentType } = buildMultipart(parts, opts);
  return request(t.http).post(path).set('Content-Type', contentType).set('Accept', 'application/dicom+json').send(body);
}

describe('STOW-RS store instances (PS3.18 10.5)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  test('stores one instance and answers 200 with a RetrieveURL per instance', async () => {
    const inst = createSyntheticInstance({ modality: 'CT' });
    const res = await post(t, [inst.bytes]);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/dicom\+json/);
    const items = referenced(res.body);
    expect(items).toHaveLength(1);
    expect(value(items[0], '00081155')).toBe(inst.sopInstanceUID);
    expect(value(items[0], '00081150')).toBe(inst.sopClassUID);
    expect(value(items[0], '00081190')).toMatch(
      new RegExp(`/dicomweb/studies/${inst.studyInstanceUID}/series/${inst.seriesInstanceUID}/instances/${inst.sopInstanceUID}$`),
    );
    expect(value(res.body, '00081190')).toMatch(new RegExp(`/dicomweb/studies/${inst.studyInstanceUID}$`));
    expect(res.body['00081198']).toBeUndefined();
  });

  test('the stored blob is the exact bytes, under their SHA-256', async () => {
    const inst = createSyntheticInstance();
    expect((await post(t, [inst.bytes])).status).toBe(200);
    const row = await t.app.db.knex('instances').where({ sop_instance_uid: inst.sopInstanceUID }).first();
    const sha = createHash('sha256').update(inst.bytes).digest('hex');
    expect(row.blob_key).toBe(sha);
    expect(Number(row.size)).toBe(inst.bytes.length);
    const chunks: Buffer[] = [];
    for await (const c of await t.app.blobs.read(row.blob_key)) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).equals(inst.bytes)).toBe(true);
  });

  test('accepts unquoted parameters and a transfer-syntax parameter', async () => {
    const inst = createSyntheticInstance();
    const res = await post(t, [inst.bytes], '/dicomweb/studies', {
      quoted: false,
      extraParams: '; transfer-syntax=1.2.840.10008.1.2.1',
    });
    expect(res.status).toBe(200);
    expect(referenced(res.body)).toHaveLength(1);
  });

  test('accepts a boundary with characters that need quoting', async () => {
    const inst = createSyntheticInstance();
    const res = await post(t, [inst.bytes], '/dicomweb/studies', { boundary: "a'b(c)+_,-./:=? z" });
    expect(res.status).toBe(200);
  });

  test('accepts a single-part application/dicom body', async () => {
    const inst = createSyntheticInstance();
    const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', 'application/dicom').send(inst.bytes);
    expect(res.status).toBe(200);
    expect(value(referenced(res.body)[0], '00081155')).toBe(inst.sopInstanceUID);
  });

  test('stores into a target study and refuses instances of another study with 0xA900', async () => {
    const study = newUid();
    const inside = createSyntheticInstance({ studyInstanceUID: study });
    const outside = createSyntheticInstance();
    const res = await post(t, [inside.bytes, outside.bytes], `/dicomweb/studies/${study}`);
    expect(res.status).toBe(202);
    expect(referenced(res.body).map((i) => value(i, '00081155'))).toEqual([inside.sopInstanceUID]);
    const f = failed(res.body);
    expect(f).toHaveLength(1);
    expect(value(f[0], '00081155')).toBe(outside.sopInstanceUID);
    expect(value(f[0], '00081197')).toBe(0xa900);
    const count = await t.app.db.knex('instances').where({ sop_instance_uid: outside.sopInstanceUID }).count({ n: '*' });
    expect(Number(count[0].n)).toBe(0);
  });

  test('answers 409 when no instance could be stored', async () => {
    const res = await post(t, [Buffer.from('this is not DICOM at all, just text')]);
    expect(res.status).toBe(409);
    const f = failed(res.body);
    expect(f).toHaveLength(1);
    expect(value(f[0], '00081197')).toBe(0xc000);
    expect(res.body['00081199']).toBeUndefined();
  });

  test('answers 202 with both sequences when some parts fail', async () => {
    const good = createSyntheticInstance();
    const truncated = fs.readFileSync(sharedData('dicom/malformed/pydicom__MR_truncated.dcm'));
    const res = await post(t, [good.bytes, truncated]);
    expect(res.status).toBe(202);
    expect(referenced(res.body)).toHaveLength(1);
    expect(failed(res.body)).toHaveLength(1);
    expect(value(failed(res.body)[0], '00081197')).toBe(0xc000);
    expect(res.headers.warning).toMatch(/^299 /);
  });

  test('the same bytes twice is an idempotent success stored once', async () => {
    const inst = createSyntheticInstance();
    expect((await post(t, [inst.bytes])).status).toBe(200);
    const again = await post(t, [inst.bytes]);
    expect(again.status).toBe(200);
    expect(value(referenced(again.body)[0], '00081196')).toBeUndefined();
    const rows = await t.app.db.knex('instances').where({ sop_instance_uid: inst.sopInstanceUID });
    expect(rows).toHaveLength(1);
    expect(rows[0].version).toBe(1);
    const versions = await t.app.db.knex('instance_versions').where({ sop_instance_uid: inst.sopInstanceUID });
    expect(versions).toHaveLength(0);
  });

  test('different bytes under the same SOP Instance UID become a new version; the old bytes are kept', async () => {
    const uids = { studyInstanceUID: newUid(), seriesInstanceUID: newUid(), sopInstanceUID: newUid() };
    const first = createSyntheticInstance({ ...uids, seed: 1 });
    const second = createSyntheticInstance({ ...uids, seed: 2 });
    expect((await post(t, [first.bytes])).status).toBe(200);
    const res = await post(t, [second.bytes]);
    expect(res.status).toBe(202);
    const item = referenced(res.body)[0];
    expect(value(item, '00081155')).toBe(uids.sopInstanceUID);
    expect(value(item, '00081196')).toBe(0xb000);
    const row = await t.app.db.knex('instances').where({ sop_instance_uid: uids.sopInstanceUID }).first();
    expect(row.version).toBe(2);
    expect(row.blob_key).toBe(createHash('sha256').update(second.bytes).digest('hex'));
    const old = await t.app.db.knex('instance_versions').where({ sop_instance_uid: uids.sopInstanceUID }).first();
    expect(old.blob_key).toBe(createHash('sha256').update(first.bytes).digest('hex'));
    expect(await t.app.blobs.stat(old.blob_key)).not.toBeNull();
    const study = await t.app.db.knex('studies').where({ study_uid: uids.studyInstanceUID }).first();
    expect(study.num_instances).toBe(1);
  });

  test('a new version that moves the instance to another series keeps aggregates exact', async () => {
    const study = newUid();
    const seriesA = newUid();
    const seriesB = newUid();
    const sop = newUid();
    const keep = createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: seriesA });
    const moving = createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: seriesA, sopInstanceUID: sop, seed: 5 });
    expect((await post(t, [keep.bytes, moving.bytes])).status).toBe(200);
    const moved = createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: seriesB, sopInstanceUID: sop, seed: 6, modality: 'MR' });
    expect((await post(t, [moved.bytes])).status).toBe(202);
    const s = await t.app.db.knex('studies').where({ study_uid: study }).first();
    expect(s.num_series).toBe(2);
    expect(s.num_instances).toBe(2);
    expect(s.modalities).toEqual(['CT', 'MR']);
    const a = await t.app.db.knex('series').where({ series_uid: seriesA }).first();
    expect(a.num_instances).toBe(1);
  });

  test('study aggregates count the rows already there and those a later request adds', async () => {
    const study = newUid();
    const series = newUid();
    const first = createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: series });
    expect((await post(t, [first.bytes])).status).toBe(200);
    const mrSeries = newUid();
    const later = [
      createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: series, seed: 2 }),
      createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: mrSeries, modality: 'MR', sopClassUID: '1.2.840.10008.5.1.4.1.1.4', seed: 3 }),
    ];
    // The first instance again (unchanged) with two new ones: counts stay exact either way.
    expect((await post(t, [first.bytes, ...later.map((i) => i.bytes)])).status).toBe(200);
    const s = await t.app.db.knex('studies').where({ study_uid: study }).first();
    expect(s.num_instances).toBe(3);
    expect(s.num_series).toBe(2);
    expect(s.sop_classes).toEqual(['1.2.840.10008.5.1.4.1.1.2', '1.2.840.10008.5.1.4.1.1.4']);
    expect(Number((await t.app.db.knex('series').where({ series_uid: series }).first()).num_instances)).toBe(2);
    const third = createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: mrSeries, modality: 'MR', sopClassUID: '1.2.840.10008.5.1.4.1.1.4', seed: 4 });
    expect((await post(t, [third.bytes])).status).toBe(200);
    const after = await t.app.db.knex('studies').where({ study_uid: study }).first();
    expect(after.num_instances).toBe(4);
    expect(Number((await t.app.db.knex('series').where({ series_uid: mrSeries }).first()).num_instances)).toBe(2);
  });

  test('study and series aggregates are exact right after the response (BRAINIX, 44 instances, 2 series)', async () => {
    const dir = sharedData('dicom/series/orthanc-BRAINIX');
    const files = ['Epi', 'Flair'].flatMap((d) =>
      fs.readdirSync(`${dir}/${d}`).map((f) => fs.readFileSync(`${dir}/${d}/${f}`)),
    );
    expect(files).toHaveLength(44);
    const res = await post(t, files);
    expect(res.status).toBe(200);
    expect(referenced(res.body)).toHaveLength(44);
    const studyUid = value(res.body, '00081190').split('/').pop();
    const study = await t.app.db.knex('studies').where({ study_uid: studyUid }).first();
    expect(study.num_series).toBe(2);
    expect(study.num_instances).toBe(44);
    expect(study.modalities).toEqual(['MR']);
    const series = await t.app.db.knex('series').where({ study_pk: study.id }).orderBy('series_number');
    expect(series.map((s: { num_instances: number }) => s.num_instances)).toEqual([22, 22]);
  });

  test('concurrent requests into one study leave exact aggregates and no duplicate rows', async () => {
    const study = newUid();
    const series = [newUid(), newUid()];
    const instances = Array.from({ length: 40 }, (_, i) =>
      createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: series[i % 2], rows: 8, columns: 8 }),
    );
    // Each instance is sent twice, in different requests, at the same time.
    const batches = [0, 1, 2, 3, 4, 5, 6, 7].map((b) => instances.filter((_, i) => i % 4 === b % 4).map((x) => x.bytes));
    const results = await Promise.all(batches.map((b) => post(t, b)));
    expect(results.map((r) => r.status)).toEqual(new Array(8).fill(200));
    const s = await t.app.db.knex('studies').where({ study_uid: study }).first();
    expect(s.num_instances).toBe(40);
    expect(s.num_series).toBe(2);
    const rows = await t.app.db.knex('instances').where({ study_pk: s.id }).count({ n: '*' });
    expect(Number(rows[0].n)).toBe(40);
  });
});

describe('STOW-RS request errors', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ MAX_REQUEST_BYTES: '200000' });
  });
  afterAll(async () => {
    await t.close();
  });

  test('415 for a media type that is not DICOM', async () => {
    const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', 'text/plain').send('hello');
    expect(res.status).toBe(415);
    expect(res.body['00000902'].Value[0]).toMatch(/multipart\/related/);
  });

  test('415 for multipart/related of a type other than application/dicom', async () => {
    const res = await request(t.http)
      .post('/dicomweb/studies')
      .set('Content-Type', 'multipart/related; type="application/dicom+json"; boundary=x')
      .send('--x\r\n\r\n{}\r\n--x--');
    expect(res.status).toBe(415);
    expect(res.body['00000902'].Value[0]).toMatch(/application\/dicom\+json/);
  });

  test('400 when the boundary parameter is missing', async () => {
    const res = await request(t.http)
      .post('/dicomweb/studies')
      .set('Content-Type', 'multipart/related; type="application/dicom"')
      .send('x');
    expect(res.status).toBe(400);
    expect(res.body['00000902'].Value[0]).toMatch(/boundary/);
  });

  test('400 when the body never closes its multipart boundary, and nothing is indexed', async () => {
    const inst = createSyntheticInstance({ rows: 8, columns: 8 });
    const body = Buffer.concat([Buffer.from('--zz\r\nContent-Type: application/dicom\r\n\r\n'), inst.bytes]);
    const res = await request(t.http)
      .post('/dicomweb/studies')
      .set('Content-Type', 'multipart/related; type="application/dicom"; boundary=zz')
      .send(body);
    expect(res.status).toBe(400);
    const rows = await t.app.db.knex('instances').where({ sop_instance_uid: inst.sopInstanceUID });
    expect(rows).toHaveLength(0);
  });

  test('400 for a request with no parts', async () => {
    const res = await request(t.http)
      .post('/dicomweb/studies')
      .set('Content-Type', 'multipart/related; type="application/dicom"; boundary=zz')
      .send('--zz--\r\n');
    expect(res.status).toBe(400);
  });

  test('413 when the declared body exceeds MAX_REQUEST_BYTES', async () => {
    const inst = createSyntheticInstance({ rows: 512, columns: 512 });
    const res = await post(t, [inst.bytes]);
    expect(res.status).toBe(413);
    expect(res.body['00000902'].Value[0]).toMatch(/exceeds the limit/);
    const rows = await t.app.db.knex('instances').where({ sop_instance_uid: inst.sopInstanceUID });
    expect(rows).toHaveLength(0);
  });

  test('413 when a chunked body without Content-Length grows past MAX_REQUEST_BYTES', async () => {
    const inst = createSyntheticInstance({ rows: 512, columns: 512 });
    const { body, contentType } = buildMultipart([inst.bytes]);
    const server = t.http.listen(0);
    try {
      const port = (server.address() as AddressInfo).port;
      const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
        const req = http.request({ port, method: 'POST', path: '/dicomweb/studies', headers: { 'Content-Type': contentType } }, (res) => {
          let text = '';
          res.on('data', (d) => (text += d));
          res.on('end', () => resolve({ status: res.statusCode!, text }));
        });
        req.on('error', reject);
        // Written in pieces with no Content-Length: node sends Transfer-Encoding: chunked.
        for (let i = 0; i < body.length; i += 65536) req.write(body.subarray(i, i + 65536));
        req.end();
      });
      expect(status).toBe(413);
      expect(JSON.parse(text)['00000902'].Value[0]).toMatch(/exceeds the limit/);
    } finally {
      server.close();
    }
    const rows = await t.app.db.knex('instances').where({ sop_instance_uid: inst.sopInstanceUID });
    expect(rows).toHaveLength(0);
  });
});
