/**
 * The current-version look-up every FHIR read goes through (readCurrent) runs as a named prepared
 * statement: the same answers on every call, with and without a project filter, before and after
 * PostgreSQL switches the statement to its generic plan (from the sixth execution), in a
 * transaction and with FOR UPDATE.
 */
import knexFactory, { type Knex } from 'knex';
import { readCurrent } from '../../../src/fhir/store/resource-store';
import type { AccessFilter } from '../../../src/fhir/store/access';
import { createTestDatabase } from '../../helpers/test-app';

let database: Awaited<ReturnType<typeof createTestDatabase>>;
// One connection: the statements prepared by a read are visible to the next query.
let knex: Knex;

/** The project filter as the access guard gives it to the FHIR store (src/auth/request-access.ts). */
const inProjects =
  (projects: string[]): AccessFilter =>
  (alias) => ({
    sql: `EXISTS (SELECT 1 FROM project_resources pr WHERE pr.resource_type = ${alias}.resource_type AND pr.resource_id = ${alias}.id AND pr.project_id = ANY(?::text[]))`,
    bindings: [projects],
  });

beforeAll(async () => {
  database = await createTestDatabase({ migrated: true });
  knex = knexFactory({ client: 'pg', connection: database.url, pool: { min: 1, max: 1 } });
  await knex('projects').insert([
    { id: 'read-a', name: 'A' },
    { id: 'read-b', name: 'B' },
  ]);
  for (const [id, project] of [
    ['pa', 'read-a'],
    ['pb', 'read-b'],
  ]) {
    await knex.raw(`INSERT INTO fhir_resource (resource_type, id, version_id, last_updated, content) VALUES ('Patient', ?, 1, now(), ?::jsonb)`, [id, JSON.stringify({ resourceType: 'Patient', id, name: [{ family: id }] })]);
    await knex('project_resources').insert({ project_id: project, resource_type: 'Patient', resource_id: id });
  }
});
afterAll(async () => {
  await knex?.destroy();
  await database?.drop();
});

describe('readCurrent', () => {
  test('answers each read by its own key and project filter, on every call', async () => {
    for (let round = 0; round < 8; round++) {
      const own = await readCurrent(knex, 'Patient', 'pa', { access: inProjects(['read-a']) });
      expect(own?.content).toEqual({ resourceType: 'Patient', id: 'pa', name: [{ family: 'pa' }] });
      expect(own?.versionId).toBe(1);
      expect(own?.lastUpdated).toBeInstanceOf(Date);
      expect(await readCurrent(knex, 'Patient', 'pb', { access: inProjects(['read-a']) })).toBeUndefined();
      expect((await readCurrent(knex, 'Patient', 'pb', { access: inProjects(['read-a', 'read-b']) }))?.id).toBe('pb');
      expect((await readCurrent(knex, 'Patient', round % 2 ? 'pa' : 'pb'))?.id).toBe(round % 2 ? 'pa' : 'pb');
      expect(await readCurrent(knex, 'Patient', 'nobody')).toBeUndefined();
    }
  });

  test('is a named prepared statement on the connection, one per filter shape', async () => {
    await readCurrent(knex, 'Patient', 'pa');
    await readCurrent(knex, 'Patient', 'pa', { access: inProjects(['read-a']) });
    const prepared = (await knex.raw(`SELECT name, statement FROM pg_prepared_statements WHERE statement LIKE '%FROM fhir_resource r WHERE r.resource_type = $1 AND r.id = $2%'`)).rows as Array<{ name: string; statement: string }>;
    expect(prepared).toHaveLength(2);
    expect(prepared.filter((p) => p.statement.includes('project_resources'))).toHaveLength(1);
  });

  test('reads and locks the row inside a transaction', async () => {
    const locked = await knex.transaction(async (trx) => {
      const row = await readCurrent(trx, 'Patient', 'pb', { forUpdate: true, access: inProjects(['read-b']) });
      const locks = (await trx.raw(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'transactionid' AND pid = pg_backend_pid()`)).rows[0].n;
      return { id: row?.id, locks };
    });
    expect(locked).toEqual({ id: 'pb', locks: 1 });
  });
});
