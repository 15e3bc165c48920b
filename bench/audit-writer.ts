import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import knexFactory from 'knex';
import pino from 'pino';
import { buildAuditEvent } from '../src/audit/audit-event';
import { openAuditSpool } from '../src/audit/audit-spool';
import { createAuditWriter, type AuditWriter } from '../src/audit/audit-writer';
import { runMigrations } from '../src/db/migrate';
import { benchCli } from './lib/cli';
import { createBenchDatabase } from './lib/postgres';
import { readCpuSeconds, readMainThreadCpuSeconds } from './lib/process-stats';
import { describeMachine, fmt, markdownTable, updateResultsFile } from './lib/report';

/**
 * What a read's durable AuditEvent costs, writer against writer, in one process over one
 * PostgreSQL database: the durable outbox (src/audit/audit-spool.ts: an O_DSYNC append per group
 * of events, shipped in batches) against the group-commit writer (src/audit/audit-writer.ts: a
 * multi-row INSERT and commit per group). Events are the FHIR-read AuditEvents the gate writes.
 * At one writer each event is awaited before the next (a read at one client); at `--concurrency`
 * writers they overlap (a busy server). Rounds alternate between the writers; medians of the rounds.
 *
 *   npx tsx bench/audit-writer.ts [--events N] [--rounds R] [--concurrency 16] [--admin-url URL] [--write]
 *
 * Columns: wall time per event until durable (one writer) or events/s (concurrent); CPU of this
 * process per event, all threads and the JavaScript thread alone (the outbox's disk write runs on
 * libuv's pool); CPU of every PostgreSQL process on the machine per event (the backends, the WAL
 * writer), shipping included: each round ends when the outbox has shipped everything.
 */

const USAGE = 'usage: npx tsx bench/audit-writer.ts [--events N] [--rounds R] [--concurrency C] [--admin-url URL] [--write]\n';
const RESULTS_FILE = path.join(__dirname, 'RESULTS.md');

/** CPU seconds of every `postgres` process now (the server's, whichever database they serve). */
function postgresCpuSeconds(): number {
  let total = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (!readFileSync(`/proc/${entry}/comm`, 'latin1').startsWith('postgres')) continue;
      total += readCpuSeconds(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

interface Round {
  wallUsPerEvent: number;
  eventsPerSecond: number;
  cpuUs: number;
  mainThreadUs: number;
  postgresUs: number;
}

const median = (values: number[]): number => {
  const s = [...values].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main(): Promise<void> {
  const cli = benchCli('bench/audit-writer.ts', USAGE);
  const values = cli.parse(process.argv.slice(2), {
    events: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '16' },
    'admin-url': { type: 'string', default: process.env.BENCH_ADMIN_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres' },
    write: { type: 'boolean', default: false },
  });
  const events = Number(values.events);
  const rounds = Number(values.rounds);
  const concurrency = Number(values.concurrency);
  if (!(events > 0 && rounds > 0 && concurrency > 1)) cli.usage('--events and --rounds must be positive, --concurrency above 1');

  const load = os.loadavg();
  const db = await createBenchDatabase(values['admin-url']!);
  const knex = knexFactory({ client: 'pg', connection: db.url, pool: { min: 0, max: 10 } });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'il-bench-audit-'));
  try {
    await runMigrations(knex);
    const spool = await openAuditSpool(knex, { dir: path.join(dir, 'audit-spool'), logger: pino({ level: 'warn' }) });
    const group = createAuditWriter(knex);
    const writers: Array<[string, AuditWriter]> = [
      ['durable outbox (spool)', spool],
      ['group-commit INSERT', group],
    ];
    const event = (i: number) =>
      buildAuditEvent(
        { protocol: 'fhir', action: 'read', resourceType: 'Patient', resourceId: `p${i}`, agent: { subject: 'researcher-1', role: 'researcher', clientId: 'bench', address: '127.0.0.1' }, requestId: `bench-${i}`, projects: ['bench'] },
        { observer: 'bench' },
      );

    const measure = async (writer: AuditWriter, parallel: number): Promise<Round> => {
      const cpu0 = readCpuSeconds(process.pid);
      const main0 = readMainThreadCpuSeconds(process.pid);
      const pg0 = postgresCpuSeconds();
      const t0 = performance.now();
      let next = 0;
      await Promise.all(
        Array.from({ length: parallel }, async () => {
          while (next < events) await writer.write(event(next++), { now: true });
        }),
      );
      const wall = performance.now() - t0;
      // Shipping is part of the cost (nothing for the group-commit writer).
      await writer.flush();
      const perEvent = (s: number) => (s * 1e6) / events;
      return {
        wallUsPerEvent: (wall * 1000) / events,
        eventsPerSecond: events / (wall / 1000),
        cpuUs: perEvent(readCpuSeconds(process.pid) - cpu0),
        mainThreadUs: perEvent(readMainThreadCpuSeconds(process.pid) - main0),
        postgresUs: perEvent(postgresCpuSeconds() - pg0),
      };
    };

    const results = new Map<string, Round[]>();
    for (const parallel of [1, concurrency]) {
      // Warm-up: connections, prepared statements, the first segment.
      for (const [, w] of writers) await measure(w, parallel);
      for (let r = 0; r < rounds; r++) {
        const order = r % 2 ? [...writers].reverse() : writers;
        for (const [name, w] of order) {
          const key = `${name}|${parallel}`;
          results.set(key, [...(results.get(key) ?? []), await measure(w, parallel)]);
        }
        process.stdout.write(`  writers at ${parallel}: round ${r + 1} of ${rounds}\n`);
      }
    }
    await spool.close();
    await group.close();

    const rows: string[][] = [];
    for (const parallel of [1, concurrency]) {
      for (const [name] of writers) {
        const rs = results.get(`${name}|${parallel}`)!;
        const m = (f: (r: Round) => number) => median(rs.map(f));
        rows.push([
          name,
          String(parallel),
          parallel === 1 ? fmt(m((r) => r.wallUsPerEvent), 0) : '–',
          fmt(m((r) => r.eventsPerSecond), 0),
          fmt(m((r) => r.cpuUs), 0),
          fmt(m((r) => r.mainThreadUs), 0),
          fmt(m((r) => r.postgresUs), 0),
          fmt(m((r) => r.cpuUs + r.postgresUs), 0),
        ]);
      }
    }
    const table = markdownTable(
      ['writer', 'writers', 'µs per event until durable', 'events/s', 'CPU µs/event, this process', '... of which the JavaScript thread', 'CPU µs/event, PostgreSQL', 'CPU µs/event, both'],
      rows,
      ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    );
    const version = await db.serverVersion();
    const spoolStats = spool.stats();
    const shipping = `The outbox shipped ${spoolStats.shipped} events in ${spoolStats.shipBatches} INSERTs (${fmt(spoolStats.shipped / Math.max(1, spoolStats.shipBatches), 0)} per INSERT).`;
    process.stdout.write(`\nAudit writers (PostgreSQL ${version}), ${events} events per round, medians of ${rounds} rounds\n\n${table}\n\n${shipping}\n`);
    if (values.write) {
      const section = [
        `## Audit writers: durable outbox against group-commit INSERT, ${new Date().toISOString().slice(0, 10)}: PostgreSQL ${version}`,
        '',
        `\`npx tsx bench/audit-writer.ts --events ${events} --rounds ${rounds} --concurrency ${concurrency} --write\`. One process, one database; the FHIR-read AuditEvent the gate writes; rounds alternate between the writers, medians shown. CPU of PostgreSQL is every postgres process on the machine (backends and WAL writer), shipping included.`,
        '',
        table,
        '',
        shipping,
        '',
        ...describeMachine(dir, load),
      ].join('\n');
      updateResultsFile(RESULTS_FILE, 'audit-writers', section);
    }
  } finally {
    await knex.destroy();
    await db.drop();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
