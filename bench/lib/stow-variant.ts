import { copyFile, mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { renderCpuProfile, summariseCpuProfile } from './cpu-profile';
import { bytesFloorRatio, smallFloorRatio, streamedBody } from './floors';
import { createCtSlices, createOctVolumes, largeInstanceOptions, OCT_GEOMETRY } from './instances';
import { measurePhase, StoreVerifier } from './phase-meter';
import { createBenchDatabase, type BenchDatabase } from './postgres';
import { readMemory } from './process-stats';
import { fmt } from './report';
import { benchServerEnv, startServer, type ServerProcess } from './server-process';
import { buildMultipartBody, createAgent, postStow, record, sendAll, type PreparedRequest, type RequestStats } from './stow-client';
import { TARGETS, type DbKind, type Floors, type PhaseGroup, type PhaseMeasurement, type PhaseResult, type StowOptions, type StowSizes, type VariantResult } from './stow-types';

const SMALL_TIMEOUT_MS = 120_000;
const LARGE_TIMEOUT_MS = 900_000;

/** Everything a phase needs from the running variant. */
interface PhaseContext {
  options: StowOptions;
  sizes: StowSizes;
  db: DbKind;
  server: ServerProcess;
  database?: BenchDatabase;
  verifier: StoreVerifier;
  floors: Floors;
  log: (line: string) => void;
}

/**
 * Starts one server (database + blob store) on a fresh DATA_DIR and a free port, runs the
 * selected phases against it, and tears everything down (server, database, s3rver, files).
 */
export async function runVariant(
  options: StowOptions,
  sizes: StowSizes,
  db: DbKind,
  repoRoot: string,
  workRoot: string,
  floors: Floors,
  log: (line: string) => void,
): Promise<VariantResult> {
  const result: VariantResult = { db, store: options.store, startSeconds: 0, idleRssBytes: 0, phases: [] };
  const dataDir = await mkdtemp(path.join(workRoot, `data-${db}-`));
  const profileDir = path.join(workRoot, `profile-${db}`);
  let database: BenchDatabase | undefined;
  let s3: { dispose(): Promise<void> } | undefined;
  let server: ServerProcess | undefined;
  try {
    const env: Record<string, string> = await benchServerEnv(dataDir);
    if (db === 'postgres') {
      database = await createBenchDatabase(options.adminUrl);
      env.DATABASE_URL = database.url;
      result.postgresVersion = await database.serverVersion();
      log(`created database ${database.name}`);
    }
    if (options.store === 's3') {
      // s3rver runs inside this process: its CPU is the load generator's, not the server's.
      const { startS3Server } = await import('../../test/helpers/s3-server');
      const s = await startS3Server();
      s3 = s;
      Object.assign(env, {
        S3_BUCKET: s.bucket,
        S3_ENDPOINT: s.endpoint,
        S3_FORCE_PATH_STYLE: 'true',
        S3_REGION: s.region,
        AWS_ACCESS_KEY_ID: s.accessKeyId,
        AWS_SECRET_ACCESS_KEY: s.secretAccessKey,
      });
    }
    const nodeFlags = [...options.nodeFlags, ...(options.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [])];
    const t0 = performance.now();
    server = await startServer({ repoRoot, env, nodeFlags });
    result.startSeconds = (performance.now() - t0) / 1000;
    result.idleRssBytes = readMemory(server.pid)?.rssBytes ?? 0;
    log(`${db}/${options.store}: server pid ${server.pid} ready on ${server.baseUrl} in ${fmt(result.startSeconds, 2)} s`);

    const ctx: PhaseContext = {
      options,
      sizes,
      db,
      server,
      database: isLocal(options.adminUrl) ? database : undefined,
      verifier: new StoreVerifier(database, options.store === 'fs' ? path.join(dataDir, 'store', 'blobs') : undefined),
      floors,
      log,
    };
    const fromUs = monotonicMicros();
    if (options.phases.has('a')) await runSmallInstancePhases(ctx, result.phases);
    if (options.phases.has('b')) await runVolumePhases(ctx, result.phases);
    if (options.phases.has('c')) await runLargeInstancePhase(ctx, result.phases);
    result.phaseWindow = { fromUs, toUs: monotonicMicros() };
  } catch (err) {
    result.error = String((err as Error)?.stack ?? err);
    log(`${db}: ${result.error}`);
  } finally {
    if (server) {
      await server.stop();
      const exit = server.exited();
      if (exit && exit !== 'exit code 0') log(`${db}: server ended with ${exit}`);
    }
    if (options.cpuProf) result.profile = await summariseProfiles(profileDir, result.phaseWindow, log);
    await s3?.dispose().catch(() => undefined);
    if (database) {
      const name = database.name;
      await database.drop().then(
        () => log(`dropped database ${name}`),
        (err: unknown) => log(`could not drop ${name}: ${String(err)}`),
      );
    }
    if (!options.keep) await rm(dataDir, { recursive: true, force: true });
  }
  return result;
}

/** a: CT slices one and `batch` per request, at concurrency 1 and 8, each row with fresh UIDs. */
async function runSmallInstancePhases(ctx: PhaseContext, out: PhaseResult[]): Promise<void> {
  const { sizes, options, db } = ctx;
  const target = TARGETS.smallInstancesPerSecond[db];
  for (const perRequest of [1, sizes.batch]) {
    for (const concurrency of [1, 8]) {
      const id = `a x${perRequest} c${concurrency}`;
      if (options.rows.length > 0 && !options.rows.includes(id.slice(2))) continue;
      assertAlive(ctx.server);
      ctx.log(`${id}: generating ${sizes.small} CT slices`);
      const slices = createCtSlices(sizes.small, options.seriesSize, `${db}-${perRequest}-${concurrency}`);
      const requests: PreparedRequest[] = [];
      for (let i = 0; i < slices.length; i += perRequest) requests.push(buildMultipartBody(slices.slice(i, i + perRequest)));
      ctx.log(`${id}: sending ${requests.length} requests`);
      await ctx.verifier.begin();
      const m = await measurePhase(ctx.server, ctx.database, () => sendAll(ctx.server, requests, concurrency, SMALL_TIMEOUT_MS));
      const p = await finishPhase(ctx, m, { id, title: `CT 128x128x16, ${perRequest} per request, concurrency ${concurrency}`, group: 'a', requests });
      p.floor = smallFloorRatio(p, ctx.floors);
      if (perRequest === sizes.batch && concurrency === 8) {
        p.target = { text: `>= ${target} inst/s`, pass: p.check.ok && p.instances / p.seconds >= target };
      }
      out.push(p);
      ctx.log(`${id}: ${fmt(p.instances / p.seconds, 0)} inst/s, ${p.stats.failures} failures, ${p.check.text}`);
    }
  }
}

/** b: OCT volumes one per request, at concurrency 1 (the target row) and 2. */
async function runVolumePhases(ctx: PhaseContext, out: PhaseResult[]): Promise<void> {
  const { frames, rows, columns } = OCT_GEOMETRY;
  for (const concurrency of [1, 2]) {
    assertAlive(ctx.server);
    const id = `b OCT c${concurrency}`;
    ctx.log(`${id}: generating ${ctx.sizes.volumes} OCT volumes`);
    const requests = createOctVolumes(ctx.sizes.volumes, `${ctx.db}-${concurrency}`).map((v) => buildMultipartBody([v]));
    ctx.log(`${id}: sending`);
    await ctx.verifier.begin();
    const m = await measurePhase(ctx.server, ctx.database, () => sendAll(ctx.server, requests, concurrency, SMALL_TIMEOUT_MS));
    const p = await finishPhase(ctx, m, { id, title: `OPT ${frames} x ${rows} x ${columns} 8-bit, concurrency ${concurrency}`, group: 'b', requests });
    p.floor = bytesFloorRatio(p, ctx.floors, 'b');
    if (concurrency === 1) {
      p.target = { text: `>= ${TARGETS.volumeMBps} MB/s`, pass: p.check.ok && p.bytes / 1e6 / p.seconds >= TARGETS.volumeMBps };
    }
    out.push(p);
    ctx.log(`${id}: ${fmt(p.bytes / 1e6 / p.seconds, 0)} MB/s, ${p.stats.failures} failures, ${p.check.text}`);
  }
}

/** c: one very large instance, generated while it is sent (never held in memory). */
async function runLargeInstancePhase(ctx: PhaseContext, out: PhaseResult[]): Promise<void> {
  assertAlive(ctx.server);
  const id = 'c large';
  const opts = largeInstanceOptions(ctx.sizes.largeBytes);
  let dicomBytes = 0;
  await ctx.verifier.begin();
  const m = await measurePhase(ctx.server, ctx.database, async () => {
    const agent = createAgent(1);
    const stats: RequestStats = { requests: 1, ok: 0, failures: 0, failureSamples: [], referenced: 0, latenciesMs: [] };
    try {
      const body = streamedBody(opts);
      dicomBytes = body.dicomBytes;
      ctx.log(`${id}: streaming one ${fmt(dicomBytes / 1e6, 0)} MB instance`);
      record(stats, await postStow(ctx.server, agent, body.body, body.contentType, body.length, 1, LARGE_TIMEOUT_MS));
    } finally {
      agent.destroy();
    }
    return stats;
  });
  const p = await finishPhase(ctx, m, {
    id,
    title: `one ${opts.numberOfFrames}-frame 1024x1024 8-bit instance, streamed`,
    group: 'c',
    requests: [{ instances: 1, dicomBytes }],
  });
  p.floor = bytesFloorRatio(p, ctx.floors, 'c');
  p.target = { text: `peak RSS < ${fmt(TARGETS.largePeakRssBytes / 1e6, 0)} MB`, pass: p.check.ok && p.peakRssBytes < TARGETS.largePeakRssBytes };
  out.push(p);
  ctx.log(`${id}: ${fmt(p.bytes / 1e6 / p.seconds, 0)} MB/s, peak RSS ${fmt(p.peakRssBytes / 1e6, 0)} MB, ${p.check.text}`);
}

async function finishPhase(
  ctx: PhaseContext,
  m: PhaseMeasurement,
  d: { id: string; title: string; group: PhaseGroup; requests: Array<Pick<PreparedRequest, 'instances' | 'dicomBytes'>> },
): Promise<PhaseResult> {
  const instances = d.requests.reduce((n, r) => n + r.instances, 0);
  return {
    ...m,
    id: d.id,
    title: d.title,
    group: d.group,
    requests: d.requests.length,
    instances,
    bytes: d.requests.reduce((n, r) => n + r.dicomBytes, 0),
    check: await ctx.verifier.check(m.stats, instances),
  };
}

function assertAlive(server: ServerProcess): void {
  const gone = server.exited();
  if (gone) throw new Error(`server died (${gone}):\n${server.outputTail()}`);
}

/** Backend CPU can only be read from /proc when PostgreSQL runs on this machine. */
function isLocal(url: string): boolean {
  try {
    const host = new URL(url).hostname;
    return host === 'localhost' || host === '::1' || host === '[::1]' || host.startsWith('127.') || host === '';
  } catch {
    return false;
  }
}

/** The same clock V8 stamps CPU profile samples with (CLOCK_MONOTONIC), in microseconds. */
function monotonicMicros(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

async function summariseProfiles(dir: string, window: VariantResult['phaseWindow'], log: (line: string) => void): Promise<string | undefined> {
  let files: string[];
  try {
    files = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile'));
  } catch {
    files = [];
  }
  if (files.length === 0) return 'No CPU profile was written (did the server exit cleanly on SIGTERM?).';
  const file = path.join(dir, files[0]!);
  const keep = path.join(os.tmpdir(), `imaging-lake-${path.basename(dir)}-${Date.now()}.cpuprofile`);
  await copyFile(file, keep);
  log(`CPU profile kept at ${keep}`);
  const scope = window ? 'benchmark phases only, start-up excluded' : 'whole server lifetime';
  return renderCpuProfile(summariseCpuProfile(file, 15, window), `Server CPU profile (${scope}; ${keep})`);
}
