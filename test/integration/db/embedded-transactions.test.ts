import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { createDatabase, type Database } from '../../../src/db/database';
import { seedEmbeddedDataDir } from '../../helpers/test-app';

/**
 * knex transactions on the embedded engine: BEGIN, COMMIT, ROLLBACK and savepoints go to the
 * engine as single simple-protocol messages (database.ts TRANSACTION_CONTROL), the statements
 * between them as prepared statements. Nesting, rollbacks and failures must behave as on a server.
 */

// Creating the embedded database (initdb in WebAssembly) when no template exists takes a while.
jest.setTimeout(300_000);

let dataDir: string;
let db: Database;

beforeAll(async () => {
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'il-embedded-tx-'));
  await seedEmbeddedDataDir(dataDir);
  db = createDatabase({ kind: 'embedded', dir: path.join(dataDir, 'pg') }, pino({ level: 'silent' }));
  await db.knex.raw('CREATE TABLE tx_probe (id int PRIMARY KEY, label text)');
});

afterAll(async () => {
  await db?.close();
  await fs.rm(dataDir, { recursive: true, force: true });
});

const labels = async () => (await db.knex('tx_probe').orderBy('id').pluck('label')) as string[];

beforeEach(async () => {
  await db.knex('tx_probe').del();
});

test('a committed transaction keeps its rows; a nested one rolled back to its savepoint loses only its own', async () => {
  await db.knex.transaction(async (trx) => {
    await trx('tx_probe').insert({ id: 1, label: 'outer' });
    await trx
      .transaction(async (inner) => {
        await inner('tx_probe').insert({ id: 2, label: 'inner' });
        throw new Error('undo the inner one');
      })
      .catch((err: Error) => expect(err.message).toBe('undo the inner one'));
    await trx.transaction(async (kept) => {
      await kept('tx_probe').insert({ id: 3, label: 'kept inner' });
    });
  });
  expect(await labels()).toEqual(['outer', 'kept inner']);
});

test('a statement failing inside a transaction rolls all of it back, and the engine goes on', async () => {
  await expect(
    db.knex.transaction(async (trx) => {
      await trx('tx_probe').insert({ id: 1, label: 'first' });
      await trx('tx_probe').insert({ id: 1, label: 'duplicate key' });
    }),
  ).rejects.toMatchObject({ code: '23505' });
  expect(await labels()).toEqual([]);
  // Not left inside the aborted transaction: the next ones run and commit.
  await db.knex.transaction(async (trx) => {
    await trx('tx_probe').insert({ id: 5, label: 'after' });
  });
  expect(await labels()).toEqual(['after']);
  expect((await db.knex.raw('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
});

test('an explicit rollback discards the writes', async () => {
  const trx = await db.knex.transaction();
  await trx('tx_probe').insert({ id: 7, label: 'discarded' });
  await trx.rollback();
  expect(await labels()).toEqual([]);
});

test('a delete answers the number of rows it deleted, as on a server (zero included)', async () => {
  await db.knex('tx_probe').insert([
    { id: 1, label: 'a' },
    { id: 2, label: 'b' },
  ]);
  expect(await db.knex('tx_probe').where({ id: 3 }).delete()).toBe(0);
  expect(await db.knex('tx_probe').where({ id: 1 }).del()).toBe(1);
  expect(await db.knex('tx_probe').where({ label: 'b' }).update({ label: 'c' })).toBe(1);
  expect(await labels()).toEqual(['c']);
});

test('EMBEDDED_SHARED_BUFFERS_MB sizes the engine buffers (default 16 MB)', async () => {
  expect((await db.knex.raw("select current_setting('shared_buffers') as v")).rows[0].v).toBe('16MB');
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'il-embedded-sb-'));
  await seedEmbeddedDataDir(dir);
  const larger = createDatabase({ kind: 'embedded', dir: path.join(dir, 'pg'), sharedBuffersMb: 64 }, pino({ level: 'silent' }));
  try {
    expect((await larger.knex.raw("select current_setting('shared_buffers') as v")).rows[0].v).toBe('64MB');
  } finally {
    await larger.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
});
