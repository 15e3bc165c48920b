/**
 * The audit trail's durable outbox (src/audit/audit-spool.ts) over a real PostgreSQL database
 * and real files: an event is on disk when its write resolves, reaches `audit_events` exactly
 * once, corrections of early read events land whether or not the event shipped first, a failed
 * append refuses the access, the database being away delays shipping without losing anything,
 * the directory of a process that stopped is shipped by the next one, and a server killed with
 * SIGKILL loses no AuditEvent of an answered request.
 */
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import pino from 'pino';
import { buildAuditEvent, type AuditEvent } from '../../../src/audit/audit-event';
import { AuditWriteError, serializeAuditRow, writeAuditEvent } from '../../../src/audit/audit-store';
import { openAuditSpool, type AuditSpool } from '../../../src/audit/audit-spool';
import { mintLocalToken } from '../../../src/auth/local-token';
import { loadConfig } from '../../../src/config';
import { startServerProcess } from '../../helpers/server-process';
import { createTestDatabase } from '../../helpers/test-app';

const logger = pino({ level: 'silent' });
const event = (resourceId: string, requestId = randomUUID()): AuditEvent =>
  buildAuditEvent({ protocol: 'fhir', action: 'read', resourceType: 'Patient', resourceId, agent: { subject: 'alice' }, requestId }, { observer: 'spool-test' });
/** The same event as the gate corrects it when the answer was a failure. */
const failed = (e: AuditEvent): AuditEvent => ({ ...e, outcome: '4', outcomeDesc: 'Not found' } as AuditEvent);

describe('the audit spool (durable outbox)', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let knex: Knex;
  let dir: string;
  const spools: AuditSpool[] = [];
  const open = async (options: Partial<Parameters<typeof openAuditSpool>[1]> = {}) => {
    const spool = await openAuditSpool(knex, { dir, logger, shipDelayMs: 60_000, ...options });
    spools.push(spool);
    return spool;
  };
  const rowsOf = async (id: string) => knex('audit_events').where({ id }).select('outcome', 'request_id', 'resource');
  const segmentsOf = async (spool: AuditSpool) => (await fs.readdir(spool.directory)).filter((n) => n.endsWith('.jsonl'));

  beforeAll(async () => {
    db = await createTestDatabase({ migrated: true });
    knex = knexFactory({ client: 'pg', connection: db.url, pool: { min: 0, max: 4 } });
  });
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'il-spool-'));
  });
  afterEach(async () => {
    for (const spool of spools.splice(0)) await spool.close();
    await fs.rm(dir, { recursive: true, force: true });
  });
  afterAll(async () => {
    await knex?.destroy();
    await db?.drop();
  });

  test('an event is in a segment file when its write resolves, in the trail once shipped, and the segment is gone after', async () => {
    const spool = await open();
    const e = event('p1');
    await spool.write(e);
    const [segment] = await segmentsOf(spool);
    const lines = (await fs.readFile(path.join(spool.directory, segment), 'utf8')).trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0])).toMatchObject({ k: 'w', r: { id: e.id, outcome: '0' } });
    // Not shipped yet (the delay is a minute): the write did not wait for the database.
    expect(await rowsOf(e.id)).toHaveLength(0);
    expect(spool.stats()).toMatchObject({ events: 1, unshipped: 1, shipped: 0 });

    await spool.flush();
    const rows = await rowsOf(e.id);
    expect(rows).toHaveLength(1);
    expect(rows[0].resource).toEqual(JSON.parse(serializeAuditRow(e).resource));
    expect(spool.stats()).toMatchObject({ unshipped: 0, shipped: 1 });
    // Shipping again ships nothing twice.
    await spool.flush();
    expect(await rowsOf(e.id)).toHaveLength(1);

    // The open segment stays until the next one starts; then the shipped one is deleted.
    const small = await open({ segmentBytes: 1 });
    await small.write(event('p2'));
    await small.flush();
    await small.write(event('p3'));
    expect(await segmentsOf(small)).toEqual(['00000002.jsonl']);
  });

  test('events written in the same turn share one append', async () => {
    const spool = await open();
    const events = Array.from({ length: 20 }, (_, i) => event(`b${i}`));
    await Promise.all(events.map((e) => spool.write(e)));
    expect(spool.stats()).toMatchObject({ events: 20, batches: 1, largestBatch: 20 });
    await spool.flush();
    expect(await knex('audit_events').whereIn('id', events.map((e) => e.id)).count({ n: '*' }).first()).toEqual({ n: '20' });
  });

  test('a correction before shipping ships the corrected event only; after shipping it corrects the row once', async () => {
    const spool = await open();
    const early = event('c1');
    await spool.write(early, { now: true });
    await spool.correct(failed(early));
    await spool.flush();
    expect((await rowsOf(early.id)).map((r) => r.outcome)).toEqual(['4']);

    const shipped = event('c2');
    await spool.write(shipped);
    await spool.flush();
    expect((await rowsOf(shipped.id)).map((r) => r.outcome)).toEqual(['0']);
    await spool.correct(failed(shipped));
    await spool.flush();
    const rows = await rowsOf(shipped.id);
    expect(rows.map((r) => r.outcome)).toEqual(['4']);
    expect(rows[0].resource.outcomeDesc).toBe('Not found');
    expect(spool.stats()).toMatchObject({ corrected: 2, unshipped: 0, rejected: 0 });
  });

  test('an append that fails (a full disk) refuses the access, and the next events go to a new segment', async () => {
    const spool = await open();
    // The first segment is /dev/full: every write to it fails with ENOSPC.
    await fs.symlink('/dev/full', path.join(spool.directory, '00000001.jsonl'));
    const e = event('f1');
    await expect(spool.write(e)).rejects.toBeInstanceOf(AuditWriteError);
    expect(spool.stats()).toMatchObject({ failed: 1, events: 0 });
    const next = event('f2');
    await spool.write(next);
    expect(await segmentsOf(spool)).toEqual(['00000002.jsonl']);
    await spool.flush();
    expect(await rowsOf(e.id)).toHaveLength(0);
    expect(await rowsOf(next.id)).toHaveLength(1);
  });

  test('with the trail unwritable, writes stay durable and acknowledged; they ship once it is back', async () => {
    const spool = await open();
    await knex.raw('ALTER TABLE audit_events RENAME TO audit_events_away');
    const events = [event('d1'), event('d2')];
    try {
      await Promise.all(events.map((e) => spool.write(e)));
      await expect(spool.flush()).rejects.toThrow(/audit_events/);
      expect(spool.stats().unshipped).toBe(2);
    } finally {
      await knex.raw('ALTER TABLE audit_events_away RENAME TO audit_events');
    }
    await spool.flush();
    for (const e of events) expect(await rowsOf(e.id)).toHaveLength(1);
  });

  test('too many events waiting for the database refuses new ones until they ship', async () => {
    const spool = await open({ maxUnshipped: 3 });
    for (const id of ['m1', 'm2', 'm3']) await spool.write(event(id));
    await expect(spool.write(event('m4'))).rejects.toThrow(/refusing more/);
    await spool.flush();
    await spool.write(event('m5'));
  });

  test("the directory of a process that stopped is shipped by the next spool: each event once, corrections applied, a torn last line skipped", async () => {
    // A pid that is not running: a child that has exited.
    const child = spawn(process.execPath, ['-e', '']);
    const deadPid = await new Promise<number>((resolve) => child.once('exit', () => resolve(child.pid!)));
    const host = os.hostname().replace(/[^A-Za-z0-9._-]/g, '_');
    const stopped = path.join(dir, `${host}~${deadPid}~${randomBytes(6).toString('hex')}`);
    await fs.mkdir(stopped);
    await fs.writeFile(path.join(stopped, 'owner'), '{}\n');
    const [a, b, c, shippedBefore] = [event('r1'), event('r2'), event('r3'), event('r4')];
    // r4 shipped before the crash, its correction not yet; r3 is in the trail already (shipped, segment not yet deleted).
    await writeAuditEvent(knex, shippedBefore);
    await writeAuditEvent(knex, c);
    const line = (k: string, e: AuditEvent) => `{"k":"${k}","c":${JSON.stringify(serializeAuditRow(e).columns)},"r":${serializeAuditRow(e).resource}}\n`;
    await fs.writeFile(path.join(stopped, '00000001.jsonl'), line('w', a) + line('w', b) + line('w', c));
    await fs.writeFile(path.join(stopped, '00000002.jsonl'), line('c', failed(b)) + line('c', failed(shippedBefore)) + line('w', event('torn')).slice(0, 40));

    const spool = await open();
    expect(spool.stats().recovered).toBe(4);
    await expect(fs.stat(stopped)).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await rowsOf(a.id)).map((r) => r.outcome)).toEqual(['0']);
    expect((await rowsOf(b.id)).map((r) => r.outcome)).toEqual(['4']);
    expect((await rowsOf(c.id)).map((r) => r.outcome)).toEqual(['0']);
    expect((await rowsOf(shippedBefore.id)).map((r) => r.outcome)).toEqual(['4']);
    expect(spool.stats().rejected).toBe(0);
  });

  test('a live spool in this process keeps its directory: another one opened on the same root does not take it', async () => {
    const first = await open();
    const e = event('l1');
    await first.write(e);
    const second = await open();
    expect(second.stats().recovered).toBe(0);
    expect(await segmentsOf(first)).toHaveLength(1);
    // Closed with everything shipped: its directory is removed.
    await first.close();
    expect(await rowsOf(e.id)).toHaveLength(1);
    await expect(fs.stat(first.directory)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('a server with the audit spool, killed with SIGKILL', () => {
  test('every answered request has its AuditEvent in the trail after the restart, exactly once', async () => {
    const db = await createTestDatabase({ migrated: true });
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'il-spool-kill-'));
    // Shipping is held back a minute, so the events are only in the spool when the server dies.
    const env = { DATABASE_URL: db.url, DATA_DIR: dataDir, AUDIT_SPOOL_DIR: path.join(dataDir, 'audit-spool'), AUDIT_SPOOL_SHIP_DELAY_MS: '60000' };
    expect(loadConfig(env).auditSpoolDir).toBe(path.join(dataDir, 'audit-spool'));
    const knex = knexFactory({ client: 'pg', connection: db.url, pool: { min: 0, max: 2 } });
    try {
      const server = await startServerProcess(env);
      const token = (await mintLocalToken({ role: 'admin', ttlSeconds: 600 }, { config: loadConfig({ ...env, PORT: '0' }).auth })).accessToken;
      const ids = Array.from({ length: 30 }, () => randomUUID());
      const answered: string[] = [];
      await Promise.all(
        ids.map(async (id, i) => {
          const res = await fetch(`${server.baseUrl}/${i % 2 ? 'dicomweb/studies?PatientID=x' : 'fhir/Patient?name=x'}`, { headers: { Authorization: `Bearer ${token}`, 'X-Request-Id': id } });
          if (res.ok) answered.push(id);
          await res.arrayBuffer();
        }),
      );
      expect(answered).toHaveLength(30);
      expect(await knex('audit_events').whereIn('request_id', answered).count({ n: '*' }).first()).toEqual({ n: '0' });
      await server.kill();

      const restarted = await startServerProcess(env);
      try {
        const rows = await knex('audit_events').whereIn('request_id', answered).select('request_id');
        expect(rows.map((r: { request_id: string }) => r.request_id).sort()).toEqual([...answered].sort());
      } finally {
        await restarted.stop();
      }
      // Stopped cleanly: everything shipped, nothing left in the spool.
      expect((await fs.readdir(path.join(dataDir, 'audit-spool'), { withFileTypes: true })).filter((d) => d.isDirectory())).toEqual([]);
    } finally {
      await knex.destroy();
      await db.drop();
      await fs.rm(dataDir, { recursive: true, force: true });
    }
  }, 120_000);
});
