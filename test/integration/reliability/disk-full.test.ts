import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { failedInstances, getJson, makeInstance, retrieveInstance, searchStudies, WriteLedger, type SentInstance } from '../../helpers/fault-client';
import { aggregateMismatches, danglingRows, lostAcknowledged, openIndex, stagingLeftovers } from '../../helpers/fault-check';
import { createFaultEnv, listFiles, report, type FaultEnv, type FaultServer } from '../../helpers/fault-server';

/**
 * The filesystem blob store runs out of space. The store root (DATA_DIR/store: blobs and
 * staging, one filesystem) is a real 8 MiB tmpfs, so the kernel itself answers ENOSPC. STOW
 * must answer FailureReason 0xA700 (Out of Resources), keep serving, leave no partial blob or
 * staging file behind, and store again once there is room (the tmpfs is grown in place).
 *
 * Needs root (mount). Where mounting is not permitted the test is skipped with a notice: no
 * mock of a full disk is offered in its place.
 */
function tryMountTmpfs(dir: string, size: string): string | null {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', dir], { stdio: 'pipe' });
    return null;
  } catch (err) {
    return String((err as { stderr?: Buffer }).stderr ?? err).trim();
  }
}

function unmount(dir: string): void {
  try {
    execFileSync('umount', [dir], { stdio: 'pipe' });
  } catch {
    execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
  }
}

describe('blob store out of space', () => {
  let env: FaultEnv;
  let server: FaultServer | undefined;
  let storeDir = '';
  let mountError: string | null = 'not attempted';

  beforeAll(async () => {
    env = await createFaultEnv({ blobs: 'fs' });
    storeDir = path.join(env.dataDir, 'store');
    fs.mkdirSync(storeDir, { recursive: true });
    mountError = tryMountTmpfs(storeDir, '8m');
    if (mountError && process.env.CI === 'true') throw new Error(`disk-full: CI must be able to mount a tmpfs (root): ${mountError}`);
    if (mountError) process.stderr.write(`disk-full: cannot mount a tmpfs here (${mountError}); the test is skipped\n`);
  }, 120_000);

  afterAll(async () => {
    if (server?.alive()) await server.kill();
    if (!mountError) unmount(storeDir);
    await env?.close();
  });

  test('0xA700 when full, keeps serving, no partial blobs or staging files, stores again once there is room', async () => {
    if (mountError) return; // see the notice on stderr
    server = await env.start();
    const ledger = new WriteLedger();
    // 512 KiB instances, one per request, until the 8 MiB store is full.
    const big = (): SentInstance => makeInstance({ rows: 512, columns: 512, seed: Math.floor(Math.random() * 1e9) });
    let full: ReturnType<typeof failedInstances> = [];
    let status = 0;
    for (let i = 0; i < 40 && full.length === 0; i++) {
      const r = await ledger.send(server.baseUrl, [big()]);
      status = r.status;
      full = failedInstances(r.body);
      expect([200, 409]).toContain(r.status);
    }
    expect(status).toBe(409);
    expect(full.map((f) => f.reason)).toEqual([0xa700]);
    expect(ledger.acknowledged.size).toBeGreaterThanOrEqual(5);

    // Still full: a multi-part request fails every part that does not fit with 0xA700, none with anything else.
    const again = await ledger.send(server.baseUrl, [big(), big(), big()]);
    expect([202, 409]).toContain(again.status);
    expect(failedInstances(again.body).length).toBeGreaterThanOrEqual(2);
    for (const f of failedInstances(again.body)) expect(f.reason).toBe(0xa700);

    // Still serving: health, queries, and every stored instance byte-identical.
    expect((await getJson(`${server.baseUrl}/healthz`, 'application/json')).status).toBe(200);
    expect((await searchStudies(server.baseUrl, { PatientID: 'SYN-0001' })).status).toBe(200);
    for (const s of ledger.acknowledged.values()) {
      const got = await retrieveInstance(server.baseUrl, { study: s.studyInstanceUID, series: s.seriesInstanceUID, instance: s.sopInstanceUID });
      expect(got.status).toBe(200);
      expect(got.bytes?.equals(s.bytes)).toBe(true);
    }

    // Nothing partial on the full disk: every blob's name is the SHA-256 of its bytes; staging is empty.
    const corrupt = listFiles(path.join(storeDir, 'blobs')).filter((rel) => {
      const bytes = fs.readFileSync(path.join(storeDir, 'blobs', rel));
      return createHash('sha256').update(bytes).digest('hex') !== path.basename(rel);
    });
    expect(corrupt).toEqual([]);
    expect(stagingLeftovers(env.config)).toEqual([]);
    const blobsWhenFull = listFiles(path.join(storeDir, 'blobs')).length;
    expect(blobsWhenFull).toBe(new Set([...ledger.acknowledgedShas().values()]).size);

    // Room again (the tmpfs grows in place): the same process stores again.
    execFileSync('mount', ['-o', 'remount,size=64m', storeDir], { stdio: 'pipe' });
    const after = await Promise.all([0, 1, 2].map(() => ledger.send(server!.baseUrl, [big()])));
    expect(after.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(server.errorLines().filter((l) => !/storage full|blob store is full/.test(l))).toEqual([]);
    report('disk-full', { statuses: ledger.statusCounts(), acknowledged: ledger.acknowledged.size, blobsWhenFull });

    await server.stop();
    const view = await openIndex(env.config);
    try {
      expect(await danglingRows(view)).toEqual([]);
      expect(await lostAcknowledged(view, ledger.acknowledgedShas())).toEqual([]);
      expect(await aggregateMismatches(view.knex)).toEqual([]);
    } finally {
      await view.close();
    }
  }, 120_000);
});
