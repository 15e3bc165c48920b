import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import request from 'supertest';
import { createApp, shutdownApp } from '../../../src/app';
import { loadConfig } from '../../../src/config';
import { mintLocalToken } from '../../../src/auth/local-token';
import { createSyntheticInstance } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';

/** The embedded default (PGlite + filesystem under DATA_DIR) keeps its data across restarts. */
describe('embedded default survives a restart', () => {
  test('an instance stored before a restart is indexed and readable after it', async () => {
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'il-restart-'));
    const config = loadConfig({ DATA_DIR: dataDir, LOG_LEVEL: 'silent', SWEEP_INTERVAL_SECONDS: '0' });
    expect(config.database.kind).toBe('embedded');
    const inst = createSyntheticInstance();
    try {
      const first = await createApp(config, { logger: pino({ level: 'silent' }) });
      const { body, contentType } = buildMultipart([inst.bytes]);
      const token = (await mintLocalToken({ role: 'admin' }, { config: config.auth })).accessToken;
      const res = await request(first.express)
        .post('/dicomweb/studies')
        .set('Authorization', `Bearer ${token}`)
        .set('Content-Type', contentType)
        .send(body);
      expect(res.status).toBe(200);
      await shutdownApp(first);

      const second = await createApp(config, { logger: pino({ level: 'silent' }) });
      try {
        const row = await second.db.knex('instances').where({ sop_instance_uid: inst.sopInstanceUID }).first();
        expect(row).toBeDefined();
        const chunks: Buffer[] = [];
        for await (const c of await second.blobs.read(row.blob_key)) chunks.push(c as Buffer);
        expect(Buffer.concat(chunks).equals(inst.bytes)).toBe(true);
      } finally {
        await shutdownApp(second);
      }
    } finally {
      await fs.rm(dataDir, { recursive: true, force: true });
    }
  });
});
