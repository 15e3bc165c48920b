/**
 * The PostgreSQL connection pool of `createDatabase`: idle connections are kept for
 * DB_POOL_IDLE_SECONDS (a new backend plans the ingest statements afresh), closed after it, and a
 * kept connection that the server has closed meanwhile (a restart) is replaced, not handed out.
 */
import { Writable } from 'node:stream';
import { Client } from 'pg';
import pino from 'pino';
import { createDatabase, type Database } from '../../../src/db/database';
import { createLogger } from '../../../src/logger';
import { ADMIN_DATABASE_URL, createTestDatabase } from '../../helpers/test-app';

let database: Awaited<ReturnType<typeof createTestDatabase>>;
const opened: Database[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  for (const db of opened) await db.close();
  await database?.drop();
});

function open(poolIdleSeconds: number, logger = createLogger('silent')): Database {
  const db = createDatabase({ kind: 'postgres', url: database.url, poolMax: 1, poolIdleSeconds }, logger);
  opened.push(db);
  return db;
}

async function backendPid(db: Database): Promise<number> {
  return (await db.knex.raw('SELECT pg_backend_pid() AS pid')).rows[0].pid;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('an idle connection is kept within DB_POOL_IDLE_SECONDS and closed after it', async () => {
  const kept = open(600);
  const short = open(1);
  const [keptPid, shortPid] = [await backendPid(kept), await backendPid(short)];
  // The pool reaps idle connections once a second: 2.5 s is past a 1 s idle limit.
  await sleep(2_500);
  expect(await backendPid(kept)).toBe(keptPid);
  expect(await backendPid(short)).not.toBe(shortPid);
});

test('a kept connection that the server terminated is replaced at the next query, which succeeds, and the log says so', async () => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      lines.push(String(chunk));
      done();
    },
  });
  const consoleLog = jest.spyOn(console, 'log');
  const db = open(600, pino({ level: 'warn' }, sink));
  const before = await backendPid(db);
  const admin = new Client({ connectionString: ADMIN_DATABASE_URL });
  await admin.connect();
  try {
    const r = await admin.query('SELECT pg_terminate_backend($1) AS t', [before]);
    expect(r.rows[0].t).toBe(true);
  } finally {
    await admin.end();
  }
  // The termination reaches the idle client as an error event, which marks it disposed.
  await sleep(200);
  const after = await backendPid(db);
  expect(after).not.toBe(before);
  expect((await db.knex.raw('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  // knex's warning about the closed connection goes through the server's logger, not the console.
  const warnings = lines.map((l) => JSON.parse(l) as { source?: string; msg: string }).filter((l) => l.source === 'knex');
  expect(warnings.map((w) => w.msg)).toEqual([expect.stringMatching(/Connection Error/)]);
  expect(consoleLog).not.toHaveBeenCalled();
  consoleLog.mockRestore();
});
