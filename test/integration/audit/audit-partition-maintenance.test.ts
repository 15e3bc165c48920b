import knexFactory, { type Knex } from 'knex';
import { startAuditPartitionMaintenance } from '../../../src/audit/audit-store';
import { createTestDatabase } from '../../helpers/test-app';

/**
 * Stopping the partition maintainer waits for a run in progress, so an app's shutdown never closes
 * the pool under it: a run left waiting for a connection of a closed pool waits out the acquire
 * timeout and reports after the shutdown.
 */
describe('audit partition maintenance', () => {
  let db: { url: string; drop(): Promise<void> };
  let knex: Knex;
  beforeAll(async () => {
    db = await createTestDatabase({ migrated: true });
    knex = knexFactory({ client: 'pg', connection: db.url, pool: { min: 0, max: 1 } });
  });
  afterAll(async () => {
    await knex.destroy();
    await db.drop();
  });

  test('stop resolves only once the run in progress has finished, and nothing is reported after it', async () => {
    // The pool's only connection is held, so the run started by the maintainer waits for it.
    const held = await knex.client.acquireConnection();
    const reports: string[] = [];
    const log = (m: string) => reports.push(m);
    const maintainer = startAuditPartitionMaintenance(knex, { info: (_o, m) => log(m), error: (_o, m) => log(m) });
    let stopped = false;
    let stopping: Promise<unknown>;
    try {
      stopping = Promise.resolve(maintainer.stop()).then(() => (stopped = true));
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(stopped).toBe(false);
    } finally {
      await knex.client.releaseConnection(held);
    }
    await stopping;
    const settled = reports.length;
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(reports).toHaveLength(settled);
    expect(reports.filter((m) => m.includes('failed'))).toEqual([]);
    const { rows } = await knex.raw("SELECT count(*)::int AS n FROM pg_inherits WHERE inhparent = 'audit_events'::regclass");
    expect(rows[0].n).toBeGreaterThanOrEqual(3);
  });
});
