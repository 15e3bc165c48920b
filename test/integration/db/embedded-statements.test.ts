/**
 * Named prepared statements on the embedded engine (src/db/embedded-statements.ts): a text with
 * parameters is parsed once and then only bound and executed, with the same answers and errors
 * as PGlite's own query(), across transactions, schema changes and the bound on kept texts.
 */
import { PGlite } from '@electric-sql/pglite';
import { EmbeddedStatements } from '../../../src/db/embedded-statements';

let db: PGlite;
let statements: EmbeddedStatements;

beforeAll(async () => {
  db = new PGlite();
  await db.exec(`CREATE TABLE t (id int PRIMARY KEY, v text, j jsonb, tags text[], at timestamptz);`);
  statements = new EmbeddedStatements(db);
}, 120_000);

afterAll(async () => {
  await db?.close();
});

/** Names of the statements the engine holds prepared. */
async function preparedNames(): Promise<string[]> {
  return (await db.query<{ name: string }>('SELECT name FROM pg_prepared_statements ORDER BY name')).rows.map((r) => r.name);
}

test('a statement run many times is prepared once and answers each binding, values typed as by query()', async () => {
  const insert = 'INSERT INTO t (id, v, j, tags, at) VALUES ($1, $2, $3, $4, $5) RETURNING id, v, j, tags, at';
  const at = new Date('2026-01-02T03:04:05.678Z');
  for (let id = 1; id <= 20; id++) {
    const r = await statements.query<{ id: number; v: string; j: unknown; tags: string[]; at: Date }>(insert, [id, `v'${id}`, { n: id, s: "it's" }, ['a', `b${id}`], at]);
    expect(r.rows).toEqual([{ id, v: `v'${id}`, j: { n: id, s: "it's" }, tags: ['a', `b${id}`], at }]);
    expect(r.affectedRows).toBe(1);
  }
  expect((await preparedNames()).filter((n) => n.startsWith('il_embedded_'))).toHaveLength(1);
  // The same rows read back through PGlite's own query().
  const back = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM t WHERE j->>\'s\' = $1', ["it's"]);
  expect(back.rows).toEqual([{ n: 20 }]);
  const viaCache = await statements.query<{ id: number; v: string | null }>('SELECT id, v FROM t WHERE id = ANY($1) ORDER BY id', [[2, 3]]);
  expect(viaCache.rows).toEqual([
    { id: 2, v: "v'2" },
    { id: 3, v: "v'3" },
  ]);
  const none = await statements.query('SELECT id FROM t WHERE v = $1', [null]);
  expect(none.rows).toEqual([]);
});

test('errors are PostgreSQL errors with their codes; a text that does not parse is not kept, and the engine goes on', async () => {
  const before = statements.size;
  await expect(statements.query('SELEC id FROM t WHERE id = $1', [1])).rejects.toMatchObject({ code: '42601' });
  expect(statements.size).toBe(before);
  await expect(statements.query('SELECT id FROM t WHERE id = $1', ['not a number'])).rejects.toMatchObject({ code: '22P02' });
  await expect(statements.query('INSERT INTO t (id, v) VALUES ($1, $2)', [1, 'dup'])).rejects.toMatchObject({ code: '23505' });
  expect((await statements.query<{ id: number }>('SELECT id FROM t WHERE id = $1', [1])).rows).toEqual([{ id: 1 }]);
});

test('inside transactions: rolled back writes are gone, a statement prepared in a rolled-back transaction still runs', async () => {
  await db.query('BEGIN');
  await statements.query('INSERT INTO t (id, v) VALUES ($1, $2)', [100, 'rolled back']);
  await statements.query('UPDATE t SET v = $2 WHERE id = $1 RETURNING id', [1, 'changed']);
  await db.query('ROLLBACK');
  expect((await statements.query('SELECT v FROM t WHERE id = $1 OR id = $2 ORDER BY id', [1, 100])).rows).toEqual([{ v: "v'1" }]);
  expect((await statements.query<{ id: number }>('UPDATE t SET v = $2 WHERE id = $1 RETURNING id', [2, 'kept'])).rows).toEqual([{ id: 2 }]);
  // A failed statement aborts the transaction as usual; after ROLLBACK the kept statements run.
  await db.query('BEGIN');
  await expect(statements.query('INSERT INTO t (id, v) VALUES ($1, $2)', [2, 'dup'])).rejects.toMatchObject({ code: '23505' });
  await expect(statements.query('SELECT v FROM t WHERE id = $1', [2])).rejects.toMatchObject({ code: '25P02' });
  await db.query('ROLLBACK');
  expect((await statements.query('SELECT v FROM t WHERE id = $1', [2])).rows).toEqual([{ v: 'kept' }]);
});

test('a table changed under a kept statement: it is prepared again and answers with the new columns', async () => {
  const text = 'SELECT * FROM t WHERE id = $1';
  expect(Object.keys((await statements.query<Record<string, unknown>>(text, [3])).rows[0]!)).toEqual(['id', 'v', 'j', 'tags', 'at']);
  await db.exec('ALTER TABLE t ADD COLUMN extra int DEFAULT 7');
  expect((await statements.query<Record<string, unknown>>(text, [3])).rows[0]).toMatchObject({ id: 3, extra: 7 });
});

test('at most 128 texts are kept; the least recently used is closed in the engine', async () => {
  for (let i = 0; i < 140; i++) {
    const r = await statements.query<{ n: number }>(`SELECT $1::int + ${i} AS n`, [1]);
    expect(r.rows).toEqual([{ n: 1 + i }]);
  }
  expect(statements.size).toBe(128);
  expect((await preparedNames()).filter((n) => n.startsWith('il_embedded_'))).toHaveLength(128);
  // The first of those texts was closed; run again, it is prepared anew.
  expect((await statements.query<{ n: number }>('SELECT $1::int + 0 AS n', [5])).rows).toEqual([{ n: 5 }]);
  expect(statements.size).toBe(128);
});
