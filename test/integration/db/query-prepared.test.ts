/**
 * Read statements run straight on a pooled node-postgres connection as named prepared
 * statements: the same rows as through knex.raw, the statement parsed once per connection,
 * and the knex.raw path for transactions.
 */
import knexFactory, { type Knex } from 'knex';
import { queryPrepared } from '../../../src/db/prepared-statement';
import { createTestDatabase } from '../../helpers/test-app';

describe('queryPrepared', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let knex: Knex;
  beforeAll(async () => {
    database = await createTestDatabase();
    // One connection, so every call below meets the statements prepared before it.
    knex = knexFactory({ client: 'pg', connection: database.url, pool: { min: 1, max: 1 } });
  });
  afterAll(async () => {
    await knex?.destroy();
    await database?.drop();
  });

  const PAIR = 'SELECT ?::int + ?::int AS n, ?::text AS s, unnest(?::int[]) AS u';

  test('answers with the bindings of each call, the statement prepared once on the connection', async () => {
    expect(await queryPrepared(knex, PAIR, [2, 3, 'a', [7, 8]])).toEqual([
      { n: 5, s: 'a', u: 7 },
      { n: 5, s: 'a', u: 8 },
    ]);
    expect(await queryPrepared(knex, PAIR, [10, 20, 'b', [1]])).toEqual([{ n: 30, s: 'b', u: 1 }]);
    const prepared = (await knex.raw(`SELECT name FROM pg_prepared_statements WHERE statement = 'SELECT $1::int + $2::int AS n, $3::text AS s, unnest($4::int[]) AS u'`)).rows;
    // Prepared under the name derived from the text, with the placeholders numbered for node-postgres.
    expect(prepared).toHaveLength(1);
    expect(prepared[0].name).toMatch(/^il_[0-9a-f]{24}$/);
  });

  test('inside a transaction it runs on the transaction, through knex.raw', async () => {
    const rows = await knex.transaction(async (trx) => {
      await trx.raw('CREATE TEMP TABLE seen (x int) ON COMMIT DROP');
      await trx.raw('INSERT INTO seen VALUES (41)');
      return queryPrepared(trx, 'SELECT x + ?::int AS n FROM seen', [1]);
    });
    expect(rows).toEqual([{ n: 42 }]);
  });

  test('a database error is thrown as is and the connection stays usable', async () => {
    await expect(queryPrepared(knex, 'SELECT 1 / ?::int AS n', [0])).rejects.toThrow(/division by zero/);
    expect(await queryPrepared(knex, PAIR, [1, 1, 'c', [2]])).toEqual([{ n: 2, s: 'c', u: 2 }]);
  });
});
