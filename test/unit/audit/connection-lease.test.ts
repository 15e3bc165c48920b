import type { AuditConnection, AuditConnectionPool } from '../../../src/audit/audit-store';
import { createConnectionLease } from '../../../src/audit/connection-lease';

/** A stand-in for knex's pg pool that counts what it hands out and gets back. */
function countingPool() {
  let made = 0;
  const out = new Set<AuditConnection>();
  const released: AuditConnection[] = [];
  const pool: AuditConnectionPool = {
    async acquireConnection() {
      made++;
      const conn: AuditConnection = { query: async () => undefined };
      out.add(conn);
      return conn;
    },
    releaseConnection(conn) {
      out.delete(conn);
      released.push(conn);
    },
  };
  return { pool, made: () => made, held: () => out.size, released };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the audit writer connection lease', () => {
  test('consecutive statements run on one connection taken from the pool once', async () => {
    const p = countingPool();
    const lease = createConnectionLease(p.pool, 60_000);
    const seen = new Set<AuditConnection>();
    for (let i = 0; i < 5; i++) await lease.use(async (c) => seen.add(c));
    expect(p.made()).toBe(1);
    expect(seen.size).toBe(1);
    expect(lease.idleCount()).toBe(1);
    await lease.close();
  });

  test('two statements at once use two connections, both kept afterwards', async () => {
    const p = countingPool();
    const lease = createConnectionLease(p.pool, 60_000);
    const seen: AuditConnection[] = [];
    await Promise.all([lease.use(async (c) => seen.push(c)), lease.use(async (c) => seen.push(c))]);
    expect(new Set(seen).size).toBe(2);
    expect(lease.idleCount()).toBe(2);
    await lease.close();
    expect(p.held()).toBe(0);
  });

  test('an idle connection goes back to the pool after the hold time', async () => {
    const p = countingPool();
    const lease = createConnectionLease(p.pool, 20);
    await lease.use(async () => undefined);
    expect(p.held()).toBe(1);
    // The sweep runs on a timer: wait for it (bounded), whatever the machine's load.
    for (let waited = 0; p.held() > 0 && waited < 5_000; waited += 10) await sleep(10);
    expect(p.held()).toBe(0);
    expect(lease.idleCount()).toBe(0);
    await lease.use(async () => undefined);
    expect(p.made()).toBe(2);
    await lease.close();
  });

  test('a failed statement hands its connection back at once and rethrows', async () => {
    const p = countingPool();
    const lease = createConnectionLease(p.pool, 60_000);
    await expect(
      lease.use(async () => {
        throw new Error('connection terminated');
      }),
    ).rejects.toThrow('connection terminated');
    expect(p.held()).toBe(0);
    expect(lease.idleCount()).toBe(0);
    await lease.close();
  });

  test('a held connection that knex marked as broken is not used again', async () => {
    const p = countingPool();
    const lease = createConnectionLease(p.pool, 60_000);
    let first: AuditConnection | undefined;
    await lease.use(async (c) => {
      first = c;
    });
    first!.__knex__disposed = new Error('Connection ended unexpectedly');
    let second: AuditConnection | undefined;
    await lease.use(async (c) => {
      second = c;
    });
    expect(second).not.toBe(first);
    expect(p.released).toContain(first);
    expect(p.made()).toBe(2);
    await lease.close();
  });

  test('close hands back the idle connections, and one still running goes back when it ends', async () => {
    const p = countingPool();
    const lease = createConnectionLease(p.pool, 60_000);
    await lease.use(async () => undefined);
    let finish!: () => void;
    const running = lease.use(() => new Promise<void>((r) => (finish = r)));
    await sleep(0);
    await lease.close();
    expect(p.held()).toBe(1);
    finish();
    await running;
    expect(p.held()).toBe(0);
    expect(lease.idleCount()).toBe(0);
  });
});
