/**
 * Named prepared statements for the hot STOW-RS statements (preparedRaw) and the most frequent
 * viewer reads (queryPrepared): parsed once per connection, then only bound and executed, with
 * the right answers for every binding.
 */
import knexFactory, { type Knex } from 'knex';
import { keyedStatement, preparedRaw, queryPrepared, singleKeys } from '../../../src/db/prepared-statement';
import { createTestDatabase } from '../../helpers/test-app';

// One database and one connection for both: every statement meets the statements prepared before it.
let database: Awaited<ReturnType<typeof createTestDatabase>>;
let knex: Knex;
beforeAll(async () => {
  database = await createTestDatabase();
  knex = knexFactory({ client: 'pg', connection: database.url, pool: { min: 1, max: 1 } });
});
afterAll(async () => {
  await knex?.destroy();
  await database?.drop();
});

describe('preparedRaw', () => {
  const SUM = 'SELECT ?::int + ?::int AS n';
  const PRODUCT = 'SELECT ?::int * ?::int AS n';

  test('answers with the bindings of each call, the statement prepared once on the connection', async () => {
    expect((await preparedRaw(knex, SUM, [2, 3])).rows).toEqual([{ n: 5 }]);
    expect((await preparedRaw(knex, SUM, [10, 20])).rows).toEqual([{ n: 30 }]);
    const prepared = (await knex.raw(`SELECT name, statement FROM pg_prepared_statements WHERE statement LIKE '%$1::int + $2::int%'`)).rows;
    expect(prepared).toHaveLength(1);
    expect(prepared[0].name).toMatch(/^il_[0-9a-f]{24}$/);
  });

  test('another text gets another name, also inside a transaction', async () => {
    const n = await knex.transaction(async (trx) => (await preparedRaw(trx, PRODUCT, [6, 7])).rows[0].n);
    expect(n).toBe(42);
    expect((await preparedRaw(knex, SUM, [1, 1])).rows).toEqual([{ n: 2 }]);
    const names = (await knex.raw(`SELECT name FROM pg_prepared_statements WHERE name LIKE 'il\\_%'`)).rows.map((r: { name: string }) => r.name);
    expect(new Set(names).size).toBe(2);
  });

  test('a keyed statement matches one key by equality and several by ANY, with the same answers', async () => {
    const statement = keyedStatement('SELECT array_agg(g ORDER BY g) AS keys FROM generate_series(1, 10) AS g WHERE g {keys}');
    expect(statement.one).toContain('g = ?::bigint');
    expect(statement.many).toContain('g = ANY(?::bigint[])');
    expect(singleKeys([7])).toBe(true);
    expect(singleKeys([7], [2, 3])).toBe(false);
    expect((await preparedRaw(knex, statement.one, [7])).rows[0].keys).toEqual([7]);
    expect((await preparedRaw(knex, statement.many, [[2, 3, 11]])).rows[0].keys).toEqual([2, 3]);
  });
});

/** Statements straight on a node-postgres connection (pooled, or a transaction's): the same rows as through knex.raw. */
describe('queryPrepared', () => {
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

  test('inside a transaction it runs on the transaction\'s connection, as a named statement', async () => {
    // The pool holds one connection, which the transaction has: a pooled query would wait for it.
    const { rows, prepared } = await knex.transaction(async (trx) => {
      await trx.raw('CREATE TEMP TABLE seen (x int) ON COMMIT DROP');
      await trx.raw('INSERT INTO seen VALUES (41)');
      const rows = await queryPrepared(trx, 'SELECT x + ?::int AS n FROM seen', [1]);
      const prepared = (await trx.raw(`SELECT name FROM pg_prepared_statements WHERE statement = 'SELECT x + $1::int AS n FROM seen'`)).rows;
      return { rows, prepared };
    });
    expect(rows).toEqual([{ n: 42 }]);
    expect(prepared).toHaveLength(1);
    expect(prepared[0].name).toMatch(/^il_[0-9a-f]{24}$/);
  });

  test('a write inside a transaction that fails later is rolled back with it', async () => {
    await knex.raw('CREATE TABLE IF NOT EXISTS kept (x int)');
    await expect(
      knex.transaction(async (trx) => {
        await queryPrepared(trx, 'INSERT INTO kept VALUES (?::int)', [7]);
        expect(await queryPrepared(trx, 'SELECT count(*)::int AS n FROM kept', [])).toEqual([{ n: 1 }]);
        await queryPrepared(trx, 'SELECT 1 / ?::int AS n', [0]);
      }),
    ).rejects.toThrow(/division by zero/);
    expect((await knex.raw('SELECT count(*)::int AS n FROM kept')).rows).toEqual([{ n: 0 }]);
  });

  test('a database error is thrown as is and the connection stays usable', async () => {
    await expect(queryPrepared(knex, 'SELECT 1 / ?::int AS n', [0])).rejects.toThrow(/division by zero/);
    expect(await queryPrepared(knex, PAIR, [1, 1, 'c', [2]])).toEqual([{ n: 2, s: 'c', u: 2 }]);
  });
});
