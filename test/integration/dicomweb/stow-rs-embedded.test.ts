import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import request from 'supertest';
import { createApp, shutdownApp, type AppHandle } from '../../../src/app';
import { mintLocalToken } from '../../../src/auth/local-token';
import { loadConfig } from '../../../src/config';
import { createSyntheticInstance } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';

/**
 * STOW-RS of a large multi-frame volume (PS3.18 10.5) on the embedded default: a fresh data
 * directory (created in a worker thread), the engine's smaller buffers, and the volume streamed
 * to the blob store byte for byte.
 */

// Creating the embedded database (initdb in WebAssembly) takes well over the default 5 s, more on a busy machine.
jest.setTimeout(300_000);

describe('STOW-RS on the embedded engine', () => {
  let dataDir: string;
  let app: AppHandle;
  let token: string;

  beforeAll(async () => {
    dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'il-stow-embedded-'));
    const config = loadConfig({ DATA_DIR: dataDir, LOG_LEVEL: 'silent', SWEEP_INTERVAL_SECONDS: '0' });
    expect(config.database.kind).toBe('embedded');
    app = await createApp(config, { logger: pino({ level: 'silent' }) });
    token = (await mintLocalToken({ role: 'admin' }, { config: config.auth })).accessToken;
  });

  afterAll(async () => {
    if (app) await shutdownApp(app);
    await fs.rm(dataDir, { recursive: true, force: true });
  });

  test('a 20 MB volume is stored, indexed, and reads back byte-identical', async () => {
    const inst = createSyntheticInstance({ modality: 'OT', rows: 512, columns: 512, numberOfFrames: 80, bitsAllocated: 8 });
    expect(inst.bytes.length).toBeGreaterThan(20 * 1024 * 1024);
    const { body, contentType } = buildMultipart([inst.bytes]);
    const res = await request(app.express)
      .post('/dicomweb/studies')
      .set('Authorization', `Bearer ${token}`)
      .set('Content-Type', contentType)
      .send(body);
    expect(res.status).toBe(200);
    const row = await app.db.knex('instances').where({ sop_instance_uid: inst.sopInstanceUID }).first();
    expect(row).toBeDefined();
    const chunks: Buffer[] = [];
    for await (const c of await app.blobs.read(row.blob_key)) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).equals(inst.bytes)).toBe(true);
  });

  test('the engine runs with buffers sized for an embedded index, not a database server', async () => {
    const settings = await app.db.knex.raw(
      "select name, current_setting(name) as value from unnest(array['shared_buffers', 'wal_buffers', 'temp_buffers']) as name",
    );
    const byName = Object.fromEntries((settings.rows as Array<{ name: string; value: string }>).map((r) => [r.name, r.value]));
    expect(byName).toEqual({ shared_buffers: '16MB', wal_buffers: '1MB', temp_buffers: '1MB' });
  });
});
