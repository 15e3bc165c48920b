/**
 * STOW-RS from a sender that pauses between bursts (a gateway forwarding one study at a time):
 * bursts of single-instance requests at concurrency 8 with idle pauses between them, against the
 * PostgreSQL server. Prints, per burst, the wall time and the CPU of the database backends that
 * served it (every backend of the run's database, new ones from zero) per instance: a burst
 * that finds its pooled connections closed pays for new backends, which plan the ingest
 * statements afresh.
 *
 *   npx tsx bench/stow-bursts.ts [--bursts 4] [--burst 160] [--pause 15] [--pool-idle SECONDS]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { mintAdminToken } from './lib/auth-token';
import { createCtSlices } from './lib/instances';
import { createBenchDatabase } from './lib/postgres';
import { readCpuSeconds } from './lib/process-stats';
import { findFreePort, startServer } from './lib/server-process';
import { buildMultipartBody, sendAll } from './lib/stow-client';

const ADMIN_URL = process.env.BENCH_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      bursts: { type: 'string', default: '4' },
      burst: { type: 'string', default: '160' },
      pause: { type: 'string', default: '15' },
      'pool-idle': { type: 'string' },
    },
  });
  const bursts = Number(values.bursts);
  const perBurst = Number(values.burst);
  const pauseMs = Number(values.pause) * 1000;
  const repoRoot = path.resolve(__dirname, '..');
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'il-bench-bursts-'));
  const db = await createBenchDatabase(ADMIN_URL);
  const env: Record<string, string> = { DATA_DIR: dataDir, DATABASE_URL: db.url, PORT: String(await findFreePort()), LOG_LEVEL: 'warn' };
  if (values['pool-idle']) env.DB_POOL_IDLE_SECONDS = values['pool-idle'];
  const server = await startServer({ repoRoot, env });
  try {
    const headers = { authorization: `Bearer ${await mintAdminToken(repoRoot, env)}` };
    const target = { baseUrl: server.baseUrl, headers };
    // One untimed burst: migrations' first statements, the server's first requests.
    await sendAll(target, createCtSlices(40, 40, 'warm').map((b) => buildMultipartBody([b])), 8, 60_000);
    console.log(`pool idle: ${values['pool-idle'] ?? 'default'} s; ${bursts} bursts of ${perBurst} instances (1 per request, concurrency 8), ${pauseMs / 1000} s apart`);
    console.log('| burst | wall ms | inst/s | PostgreSQL CPU ms/inst | server CPU ms/inst | backends new / kept |');
    console.log('|---:|---:|---:|---:|---:|---:|');
    for (let b = 0; b < bursts; b++) {
      await new Promise((r) => setTimeout(r, pauseMs));
      const requests = createCtSlices(perBurst, perBurst, `b${b}`).map((x) => buildMultipartBody([x]));
      const before = new Map((await db.backendPids()).map((pid) => [pid, readCpuSeconds(pid)]));
      const serverBefore = readCpuSeconds(server.pid);
      const t0 = performance.now();
      const stats = await sendAll(target, requests, 8, 60_000);
      const ms = performance.now() - t0;
      const serverCpu = readCpuSeconds(server.pid) - serverBefore;
      let pgCpu = 0;
      let fresh = 0;
      const pids = await db.backendPids();
      for (const pid of pids) {
        const start = before.get(pid);
        if (start === undefined) fresh++;
        pgCpu += readCpuSeconds(pid) - (start ?? 0);
      }
      if (stats.failures) throw new Error(`burst ${b}: ${stats.failureSamples.join('; ')}`);
      console.log(`| ${b + 1} | ${ms.toFixed(0)} | ${((perBurst / ms) * 1000).toFixed(0)} | ${((pgCpu * 1000) / perBurst).toFixed(2)} | ${((serverCpu * 1000) / perBurst).toFixed(2)} | ${fresh} / ${pids.length - fresh} |`);
    }
  } finally {
    await server.stop();
    await db.drop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`bench/stow-bursts.ts: ${(err as Error)?.stack ?? err}\n`);
  process.exit(1);
});
