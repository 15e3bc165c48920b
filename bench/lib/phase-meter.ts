import { readdir } from 'node:fs/promises';
import path from 'node:path';
import type { BenchDatabase } from './postgres';
import { readCpuSeconds, readCpuTimes, readMachineCpu, readMainThreadCpuSeconds, RssSampler } from './process-stats';
import type { RequestStats } from './stow-client';
import type { PhaseMeasurement } from './stow-types';

/**
 * Runs `work` while sampling the server's RSS every 50 ms and counting CPU time: the server's,
 * the PostgreSQL backends' serving it (when `db` is a server on this machine), ours, and the
 * whole machine's. `server` is any process by id (imaging-lake, Orthanc).
 */
export async function measurePhase<S extends RequestStats>(
  server: { pid: number },
  db: BenchDatabase | undefined,
  work: () => Promise<S>,
): Promise<PhaseMeasurement & { stats: S }> {
  const sampler = new RssSampler(server.pid, 50);
  const dbCpu0 = db ? await backendCpu(db) : undefined;
  const serverCpu0 = readCpuTimes(server.pid);
  const serverMain0 = readMainThreadCpuSeconds(server.pid);
  const clientCpu0 = process.cpuUsage();
  const machine0 = readMachineCpu();
  sampler.start();
  const t0 = performance.now();
  const stats = await work();
  const seconds = (performance.now() - t0) / 1000;
  const rss = sampler.stop();
  const serverCpu1 = readCpuTimes(server.pid);
  const serverMain1 = readMainThreadCpuSeconds(server.pid);
  const clientCpu = process.cpuUsage(clientCpu0);
  const machine1 = readMachineCpu();
  let dbCpuSeconds: number | undefined;
  if (db && dbCpu0) {
    const dbCpu1 = await backendCpu(db);
    dbCpuSeconds = 0;
    // Backends that appeared during the phase count from zero; ones that ended are lost (rare: the pool keeps them).
    for (const [pid, s] of dbCpu1) dbCpuSeconds += s - (dbCpu0.get(pid) ?? 0);
  }
  return {
    stats,
    seconds,
    serverCpuSeconds: serverCpu1.user + serverCpu1.system - serverCpu0.user - serverCpu0.system,
    serverSystemCpuSeconds: serverCpu1.system - serverCpu0.system,
    serverMainThreadCpuSeconds: serverMain1 - serverMain0,
    dbCpuSeconds,
    clientCpuSeconds: (clientCpu.user + clientCpu.system) / 1e6,
    machineBusy: machine1.total > machine0.total ? (machine1.busy - machine0.busy) / (machine1.total - machine0.total) : NaN,
    peakRssBytes: rss.peakBytes,
    startRssBytes: rss.startBytes,
  };
}

async function backendCpu(db: BenchDatabase): Promise<Map<number, number>> {
  const pids = await db.backendPids().catch(() => [] as number[]);
  return new Map(pids.map((pid) => [pid, readCpuSeconds(pid)]));
}

/**
 * Checks, after each phase, that what the responses claim was stored really was: every
 * request answered 200 with all its instances referenced, and the `instances` table
 * (PostgreSQL) and the content-addressed blob files (filesystem store) grew by as many.
 */
export class StoreVerifier {
  private expected = 0;
  private txBefore: { commits: number; rollbacks: number; deadlocks: number } | null = null;

  constructor(
    private readonly database: BenchDatabase | undefined,
    private readonly blobsDir: string | undefined,
  ) {}

  /** Call before a phase: rollbacks and deadlocks are reported as the phase's own. */
  async begin(): Promise<void> {
    this.txBefore = this.database ? await this.database.transactionStats().catch(() => null) : null;
  }

  async check(stats: RequestStats, sent: number): Promise<{ ok: boolean; text: string }> {
    this.expected += stats.referenced;
    const parts: string[] = [`refs ${stats.referenced}/${sent}`];
    let ok = stats.failures === 0 && stats.referenced === sent;
    if (this.database) {
      const n = await this.database.countInstances();
      parts.push(`db ${n}/${this.expected}`);
      if (n !== this.expected) ok = false;
      const tx = await this.database.transactionStats().catch(() => null);
      // Rolled-back transactions are retries (unique violations, deadlocks) or failures: work done twice.
      if (tx && this.txBefore) parts.push(`rollbacks ${tx.rollbacks - this.txBefore.rollbacks}, deadlocks ${tx.deadlocks - this.txBefore.deadlocks}`);
    }
    if (this.blobsDir) {
      const n = await countFiles(this.blobsDir);
      parts.push(`blobs ${n}/${this.expected}`);
      if (n !== this.expected) ok = false;
    }
    return { ok, text: `${ok ? 'ok' : 'MISMATCH'}: ${parts.join(', ')}` };
  }
}

/** Regular files below `dir`, recursively (0 when it does not exist). */
export async function countFiles(dir: string): Promise<number> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  let n = 0;
  for (const e of entries) {
    if (e.isDirectory()) n += await countFiles(path.join(dir, e.name));
    else if (e.isFile()) n++;
  }
  return n;
}
