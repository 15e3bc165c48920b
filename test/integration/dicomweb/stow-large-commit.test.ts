import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import request from 'supertest';
import { createSyntheticInstance } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { startTestApp, testBlobKind, type TestApp } from '../../helpers/test-app';

type Json = Record<string, { vr: string; Value?: any[] }>;

const referenced = (body: Json) => (body['00081199']?.Value ?? []) as Json[];
const failed = (body: Json) => (body['00081198']?.Value ?? []) as Json[];

/**
 * STOW-RS of large parts (spilled, written with direct I/O): a blob that cannot be committed
 * leaves no row behind, not even the patient, study and series rows of its instance, and the
 * other parts of the request are stored alone. The failure is real: the directory the blob's name
 * goes into is taken by a file.
 */
const describeFs = testBlobKind() === 'fs' ? describe : describe.skip;

jest.setTimeout(120_000);

describeFs('STOW-RS of large parts: index rows wait for their blobs', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t?.close();
  });

  function post(parts: Buffer[]) {
    const { body, contentType } = buildMultipart(parts);
    return request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).set('Accept', 'application/dicom+json').send(body);
  }

  /** A multi-frame instance of about 8 MB (large enough to be indexed while committed). */
  function volume(seed: number) {
    const inst = createSyntheticInstance({ modality: 'OPT', rows: 512, columns: 512, numberOfFrames: 32, bitsAllocated: 8, seed });
    expect(inst.bytes.length).toBeGreaterThan(8 * 1024 * 1024);
    return inst;
  }

  /** Puts a file where the blob's shard directory (`blobs/<aa>`) would go, so that its commit fails. */
  async function blockShardOf(bytes: Buffer): Promise<() => Promise<void>> {
    const key = createHash('sha256').update(bytes).digest('hex');
    const shard = path.join(t.dataDir, 'store', 'blobs', key.slice(0, 2));
    await fs.mkdir(path.dirname(shard), { recursive: true });
    await fs.writeFile(shard, 'not a directory');
    return () => fs.rm(shard, { force: true });
  }

  async function indexed(inst: { sopInstanceUID: string; studyInstanceUID: string; seriesInstanceUID: string }) {
    const knex = t.app.db.knex;
    return {
      instance: await knex('instances').where({ sop_instance_uid: inst.sopInstanceUID }).first(),
      series: await knex('series').where({ series_uid: inst.seriesInstanceUID }).first(),
      study: await knex('studies').where({ study_uid: inst.studyInstanceUID }).first(),
    };
  }

  test('a large volume is stored and indexed, and reads back byte-identical', async () => {
    const inst = volume(11);
    const res = await post([inst.bytes]);
    expect(res.status).toBe(200);
    expect(referenced(res.body)).toHaveLength(1);
    const rows = await indexed(inst);
    expect(rows.instance.blob_key).toBe(createHash('sha256').update(inst.bytes).digest('hex'));
    const chunks: Buffer[] = [];
    for await (const c of await t.app.blobs.read(rows.instance.blob_key)) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).equals(inst.bytes)).toBe(true);
  });

  test('a large volume whose blob cannot be committed is refused, and no patient, study, series or instance row is left', async () => {
    const inst = volume(12);
    const unblock = await blockShardOf(inst.bytes);
    try {
      const res = await post([inst.bytes]);
      expect(res.status).toBe(409);
      expect(failed(res.body)).toHaveLength(1);
      const rows = await indexed(inst);
      expect(rows).toEqual({ instance: undefined, series: undefined, study: undefined });
    } finally {
      await unblock();
    }
  });

  test('with two large parts of which one cannot be committed, the other is stored and indexed alone', async () => {
    const good = volume(13);
    const bad = volume(14);
    const unblock = await blockShardOf(bad.bytes);
    try {
      const res = await post([good.bytes, bad.bytes]);
      expect(res.status).toBe(202);
      expect(referenced(res.body).map((i) => i['00081155']?.Value?.[0])).toEqual([good.sopInstanceUID]);
      expect(failed(res.body).map((i) => i['00081155']?.Value?.[0])).toEqual([bad.sopInstanceUID]);
      expect((await indexed(good)).instance).toBeDefined();
      expect(await indexed(bad)).toEqual({ instance: undefined, series: undefined, study: undefined });
    } finally {
      await unblock();
    }
  });
});
