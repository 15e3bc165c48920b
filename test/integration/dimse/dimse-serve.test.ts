/**
 * `imaging-lake serve` with DIMSE_PORT, as an operator runs it: storescu pushes a stream of
 * instances, the server is killed with SIGKILL in the middle, and after a restart every
 * instance storescu was told was stored (status Success) is indexed and retrievable.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { mintLocalToken } from '../../../src/auth/local-token';
import { loadConfig } from '../../../src/config';
import { createSyntheticInstance } from '../../../src/generate/synthetic-dicom';
import { startServerProcess } from '../../helpers/server-process';
import { createTestDatabase, testDbKind } from '../../helpers/test-app';

/** Parses storescu -v output: the files it was told were stored. */
function acknowledgedFiles(output: string): string[] {
  const stored: string[] = [];
  let current: string | undefined;
  for (const line of output.split('\n')) {
    const sending = /Sending file: (.+)$/.exec(line);
    if (sending) current = sending[1].trim();
    if (/Received Store Response \(Success\)/.test(line) && current) stored.push(current);
  }
  return stored;
}

describe('serve with DIMSE_PORT', () => {
  test('instances acknowledged over DIMSE survive a SIGKILL of the server', async () => {
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'il-dimse-serve-'));
    const database = testDbKind() === 'postgres' ? await createTestDatabase() : undefined;
    const env: Record<string, string> = {
      DATA_DIR: dataDir,
      SWEEP_INTERVAL_SECONDS: '0',
      DIMSE_PORT: '0',
      DIMSE_AE_TITLE: 'LAKE',
      DIMSE_PEERS: JSON.stringify([{ aeTitle: 'MODALITY' }]),
    };
    if (database) env.DATABASE_URL = database.url;
    const files: Array<{ file: string; sop: string; study: string; series: string }> = [];
    for (let i = 0; i < 150; i++) {
      const instance = createSyntheticInstance({ rows: 64, columns: 64, seed: i, studyInstanceUID: i % 2 ? undefined : '2.25.4242424242' });
      const file = path.join(dataDir, `in-${i}.dcm`);
      await fs.writeFile(file, instance.bytes);
      files.push({ file, sop: instance.sopInstanceUID, study: instance.studyInstanceUID, series: instance.seriesInstanceUID });
    }
    try {
      const server = await startServerProcess(env);
      expect(server.dimsePort).toBeGreaterThan(0);
      // storescu sends them one association, one C-STORE at a time; the server dies part way.
      const storescu = spawn('storescu', ['-v', '-aet', 'MODALITY', '-aec', 'LAKE', '127.0.0.1', String(server.dimsePort), ...files.map((f) => f.file)]);
      let output = '';
      storescu.stdout.on('data', (d) => (output += String(d)));
      storescu.stderr.on('data', (d) => (output += String(d)));
      const ended = new Promise<void>((resolve) => storescu.once('exit', () => resolve()));
      await new Promise<void>((resolve) => {
        const check = () => (acknowledgedFiles(output).length >= 10 ? resolve() : setTimeout(check, 5));
        check();
      });
      await server.kill();
      await ended;
      const acknowledged = new Set(acknowledgedFiles(output));
      expect(acknowledged.size).toBeGreaterThanOrEqual(10);
      // The kill came before storescu was through: some were sent and not acknowledged, or never sent.
      expect(acknowledged.size).toBeLessThan(files.length);

      const again = await startServerProcess(env);
      try {
        const token = (await mintLocalToken({ role: 'admin', ttlSeconds: 3600 }, { config: loadConfig({ ...env, PORT: '0' }).auth })).accessToken;
        for (const f of files.filter((x) => acknowledged.has(x.file))) {
          const res = await fetch(`${again.baseUrl}/dicomweb/studies/${f.study}/series/${f.series}/instances/${f.sop}`, {
            headers: { Accept: 'application/dicom; transfer-syntax=*', Authorization: `Bearer ${token}` },
          });
          expect({ sop: f.sop, status: res.status }).toEqual({ sop: f.sop, status: 200 });
          const bytes = Buffer.from(await res.arrayBuffer());
          expect(bytes.includes(Buffer.from(f.sop))).toBe(true);
        }
        // The restarted server takes associations again.
        const echo = await new Promise<number>((resolve) => spawn('echoscu', ['-aet', 'MODALITY', '-aec', 'LAKE', '127.0.0.1', String(again.dimsePort)]).once('exit', (code) => resolve(code ?? 1)));
        expect(echo).toBe(0);
      } finally {
        await again.stop();
      }
    } finally {
      await database?.drop();
      await fs.rm(dataDir, { recursive: true, force: true });
    }
  }, 180_000);
});
