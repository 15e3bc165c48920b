import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import pino from 'pino';
import { createApp, shutdownApp } from '../../../src/app';
import { loadConfig } from '../../../src/config';
import { mintLocalToken } from '../../../src/auth/local-token';
import { createSyntheticInstance } from '../../../src/generate/synthetic-dicom';
import { buildMultipart } from '../../helpers/multipart-body';
import { startServerProcess } from '../../helpers/server-process';
import { createTestDatabase, testDbKind } from '../../helpers/test-app';

/**
 * A server killed with SIGKILL in the middle of concurrent STOW requests: after restart every
 * acknowledged instance is indexed and its blob is byte-identical, no index row points at a
 * missing blob, and the orphan sweeper removes whatever the crash left unreferenced.
 */
describe('crash consistency under SIGKILL', () => {
  test('no acknowledged instance is lost and no index row dangles', async () => {
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'il-crash-'));
    const database = testDbKind() === 'postgres' ? await createTestDatabase() : undefined;
    const env: Record<string, string> = { DATA_DIR: dataDir, SWEEP_INTERVAL_SECONDS: '0', ORPHAN_GRACE_SECONDS: '0' };
    if (database) env.DATABASE_URL = database.url;
    try {
      const server = await startServerProcess(env);
      // A token minted with the child's environment (same DATA_DIR/keys, same issuer: PORT=0) is accepted by it.
      const token = (await mintLocalToken({ role: 'admin', ttlSeconds: 3600 }, { config: loadConfig({ ...env, PORT: '0' }).auth })).accessToken;
      const acknowledged = new Map<string, Buffer>();
      let stop = false;
      const client = async (worker: number) => {
        for (let round = 0; !stop; round++) {
          const batch = Array.from({ length: 4 }, (_, i) =>
            createSyntheticInstance({ rows: 32, columns: 32, seed: worker * 100000 + round * 10 + i }),
          );
          const { body, contentType } = buildMultipart(batch.map((b) => b.bytes));
          try {
            const res = await fetch(`${server.baseUrl}/dicomweb/studies`, {
              method: 'POST',
              headers: { 'Content-Type': contentType, Authorization: `Bearer ${token}` },
              body,
            });
            if (res.status === 200) {
              await res.json();
              for (const b of batch) acknowledged.set(b.sopInstanceUID, b.bytes);
            }
          } catch {
            return; // the server died mid-request: nothing in flight counts as acknowledged
          }
        }
      };
      const clients = Array.from({ length: 6 }, (_, w) => client(w));
      // Let some requests complete, then kill the server in the middle of the load.
      const deadline = Date.now() + 60_000;
      while (acknowledged.size < 60) {
        if (Date.now() > deadline) throw new Error(`only ${acknowledged.size} instances acknowledged in 60 s`);
        await new Promise((r) => setTimeout(r, 20));
      }
      await server.kill();
      stop = true;
      await Promise.all(clients);
      expect(acknowledged.size).toBeGreaterThanOrEqual(60);

      // Restart in-process on the same storage and check the index against the blobs.
      const app = await createApp(loadConfig({ ...env, LOG_LEVEL: 'silent' }), { logger: pino({ level: 'silent' }) });
      try {
        for (const [uid, bytes] of acknowledged) {
          const row = await app.db.knex('instances').where({ sop_instance_uid: uid }).first();
          expect(row).toBeDefined();
          const chunks: Buffer[] = [];
          for await (const c of await app.blobs.read(row.blob_key)) chunks.push(c as Buffer);
          expect(createHash('sha256').update(Buffer.concat(chunks)).digest('hex')).toBe(
            createHash('sha256').update(bytes).digest('hex'),
          );
        }
        const rows: Array<{ blob_key: string }> = await app.db.knex('instances').select('blob_key');
        for (const r of rows) expect(await app.blobs.stat(r.blob_key)).not.toBeNull();

        await app.sweeper.sweep({ full: true });
        const referenced = new Set(rows.map((r) => r.blob_key));
        const stored: string[] = [];
        for await (const b of app.blobs.list()) stored.push(b.key);
        expect(stored.filter((k) => !referenced.has(k))).toEqual([]);
        for (const key of referenced) expect(stored).toContain(key);
      } finally {
        await shutdownApp(app);
      }
    } finally {
      await database?.drop();
      // Retries: on a busy machine the embedded engine's files can still be settling as the app closes (ENOTEMPTY).
      await fs.rm(dataDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
    }
  }, 180_000);
});
