import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import { Client } from 'pg';
import pinoHttp from 'pino-http';
import type { AppHandle } from '../src/app';
import type { AuditWriter } from '../src/audit/audit-writer';
import { buildAuditEvent } from '../src/audit/audit-event';
import { insertAuditRowsOn, ROW_COLUMNS, serializeAuditRow } from '../src/audit/audit-store';
import { createAuditWriter } from '../src/audit/audit-writer';
import { queryPrepared } from '../src/db/prepared-statement';
import knexFactory from 'knex';
import { requestedProjects } from '../src/auth/access-guard';
import { verifyLocalAccessToken } from '../src/auth/access-token';
import { bearerTokenOf } from '../src/auth/authenticator';
import { createBearerVerifier } from '../src/auth/bearer-verifier';
import { decide } from '../src/auth/policy';
import { classifyRequest } from '../src/auth/policy-routes';
import { studyRestrictionFor } from '../src/auth/project-filters';
import { openKeyStore } from '../src/auth/signing-keys';
import { mintLocalToken } from '../src/auth/local-token';
import { loadConfig } from '../src/config';
import { createSyntheticInstance } from '../src/generate/synthetic-dicom';
import { createBenchDatabase, openBenchDatabase, type BenchDatabase } from './lib/postgres';
import { renderCpuProfile, summariseCpuProfile } from './lib/cpu-profile';
import { describeMachine, fmt, markdownTable, updateResultsFile } from './lib/report';
import { benchCli } from './lib/cli';
import { staleBuildWarning } from './lib/server-process';
const SERVER_NODE_FLAGS: string[] = require('../bin/server-node-flags.js');

/**
 * What the access layer costs: token verification, the policy decision with
 * its project row filter, and the durable AuditEvent written before every answer. One server
 * process serves two compositions of the same pieces on two ports over the same database:
 * the app as createApp builds it (guarded), and the protocol routers alone (bare: no auth
 * router, no audit gate, no guard). The same calls go to both, in alternating blocks, at each
 * `--concurrency` (default 1 and 16); the table gives p50/p95 and throughput and their ratio.
 *
 *   npx tsx bench/auth.ts [--requests N] [--concurrency 1,16] [--db postgres|embedded] [--admin-url URL] [--db-prefix il_x_] [--async-commit] [--cpu-prof] [--variants a,b] [--dist | --server-root DIR | --server-src DIR] [--no-analyze] [--calls qido,fhir] [--write]
 *   npx tsx bench/auth.ts --steps     (only the guard's steps one by one, in this process, no database)
 *
 * The AuditEvent is committed durably before each answer, so every guarded call pays one WAL
 * flush; the run measures that floor (a one-row INSERT commit) and prints it next to the table,
 * with what one more idle wait of that length costs a Node.js process in CPU on this machine
 * (waitCost: at one client that, not code on the audit path, is most of the audit's node CPU),
 * and a FHIR read with its AuditEvent beside it (as the gate writes it) against inside the read's
 * own statement, at one reader and at 16 (auditShapeCost, auditShapeCostConcurrent).
 * Reads start their AuditEvent at authorization, so that flush overlaps the handler; the
 * *audit after answer* columns run the same guard writing it only when the answer is ready, the
 * *same composition, audit early* columns the same routers and guard starting it early, and
 * the server CPU columns give the server process's CPU time per request (Node.js side only).
 * `--async-commit` (diagnostic only, never a deployment setting for the audit trail) runs the
 * database with synchronous_commit=off to show what the access layer costs apart from it.
 *
 * By default the server process runs the TypeScript sources through tsx; `--dist` runs the build
 * (`dist/`, as `npm start` does, with the same node flags) and `--server-root DIR` the build of
 * another checkout (A/B runs: a copy of the baseline's `dist/` and `migrations/`); `--server-src DIR` runs
 * another checkout's `src/` through tsx (A/B runs without a build). `--db-prefix` names the bench
 * database `<prefix><random>` (e.g. an engineer's `il_a_`) instead of `il_bench_<random>`.
 *
 * Exit status: 0 every ratio under the target, 3 a target missed, 1 a request failed, 2 bad arguments.
 */

const TARGET_RATIO = 1.3;
const RESULTS_FILE = path.join(__dirname, 'RESULTS.md');
const ISSUER = 'http://bench.imaging-lake.invalid';
const USAGE = 'usage: npx tsx bench/auth.ts [--requests N] [--concurrency 1,16] [--db postgres|embedded] [--admin-url URL] [--db-prefix il_x_] [--async-commit] [--cpu-prof] [--variants guarded,noAudit,perRequest,late,early] [--dist | --server-root DIR | --server-src DIR] [--no-analyze] [--calls qido,fhir] [--write] | --steps\n';
const REPO_ROOT = path.resolve(__dirname, '..');
const cli = benchCli('bench/auth.ts', USAGE);
const usage = cli.usage;

interface Options {
  requests: number;
  /** Concurrent clients per measured row (1 = one request at a time). */
  concurrency: number[];
  db: 'postgres' | 'embedded';
  adminUrl: string;
  write: boolean;
  /** Diagnostic: the bench database commits without waiting for the WAL flush (synchronous_commit=off). */
  asyncCommit: boolean;
  /** Diagnostic: run the server under `node --cpu-prof` and print where its main thread spent time. */
  cpuProf: boolean;
  /** Only time the guard's steps one by one (no servers, no database). */
  steps: boolean;
  /** Variants measured besides `bare` (default all; fewer for shorter runs and a CPU profile of one variant). */
  variants: Variant[];
  /** ANALYZE the database after seeding (default; --no-analyze measures on a database without statistics, as before). */
  analyze: boolean;
  /** Which calls to measure (default both): `qido`, `fhir`. */
  calls: Array<'qido' | 'fhir'>;
  /** Where the server process loads the app from: a checkout's `src/` through tsx (default this one), or a checkout's `dist/`. */
  server: { kind: 'src'; root: string } | { kind: 'dist'; root: string };
  /** Name prefix of the bench database (default: createBenchDatabase's `il_bench_`). */
  dbPrefix?: string;
}

function parseOptions(argv: string[]): Options {
  const values = cli.parse(argv, {
    requests: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '1,16' },
    db: { type: 'string', default: 'postgres' },
    'admin-url': { type: 'string', default: 'postgres://postgres@127.0.0.1:5432/postgres' },
    write: { type: 'boolean', default: false },
    'async-commit': { type: 'boolean', default: false },
    'cpu-prof': { type: 'boolean', default: false },
    steps: { type: 'boolean', default: false },
    variants: { type: 'string', default: VARIANTS.filter((v) => v !== 'bare').join(',') },
    dist: { type: 'boolean', default: false },
    'no-analyze': { type: 'boolean', default: false },
    calls: { type: 'string', default: 'qido,fhir' },
    'server-root': { type: 'string' },
    'server-src': { type: 'string' },
    'db-prefix': { type: 'string' },
  });
  const requests = Number(values.requests);
  if (!Number.isInteger(requests) || requests < 200) usage('--requests must be an integer of at least 200');
  const concurrency = String(values.concurrency).split(',').map(Number);
  if (concurrency.length === 0 || concurrency.some((c) => !Number.isInteger(c) || c < 1 || c > 256)) usage('--concurrency is a comma-separated list of integers from 1 to 256');
  if (values.db !== 'postgres' && values.db !== 'embedded') usage('--db is postgres or embedded');
  if (values['async-commit'] && values.db !== 'postgres') usage('--async-commit needs --db postgres');
  const named = String(values.variants).split(',').filter(Boolean);
  if (named.some((v) => !VARIANTS.includes(v as Variant))) usage(`--variants is a comma-separated list of ${VARIANTS.join(', ')}`);
  const variants = VARIANTS.filter((v) => v === 'bare' || named.includes(v));
  const serverRoot = values['server-root'] === undefined ? undefined : path.resolve(String(values['server-root']));
  if (serverRoot && !existsSync(path.join(serverRoot, 'dist', 'app.js'))) usage(`--server-root ${serverRoot} holds no dist/app.js (build it first)`);
  const serverSrc = values['server-src'] === undefined ? undefined : path.resolve(String(values['server-src']));
  if (serverSrc && (serverRoot || values.dist)) usage('--server-src runs sources: not with --dist or --server-root');
  if (serverSrc && !existsSync(path.join(serverSrc, 'src', 'app.ts'))) usage(`--server-src ${serverSrc} holds no src/app.ts`);
  const server: Options['server'] = serverRoot || values.dist ? { kind: 'dist', root: serverRoot ?? REPO_ROOT } : { kind: 'src', root: serverSrc ?? REPO_ROOT };
  const dbPrefix = values['db-prefix'] === undefined ? undefined : String(values['db-prefix']);
  if (dbPrefix !== undefined && !/^il_[a-z][0-9]?_$/.test(dbPrefix)) usage('--db-prefix is il_<letter>_ (e.g. il_a_)');
  const calls = String(values.calls).split(',').filter(Boolean);
  if (calls.length === 0 || calls.some((c) => c !== 'qido' && c !== 'fhir')) usage('--calls is a comma-separated list of qido, fhir');
  return { requests, concurrency, db: values.db as Options['db'], adminUrl: String(values['admin-url']), write: Boolean(values.write), asyncCommit: Boolean(values['async-commit']), cpuProf: Boolean(values['cpu-prof']), steps: Boolean(values.steps), variants, server, dbPrefix, analyze: !values['no-analyze'], calls: calls as Options['calls'] };
}


// ---------------------------------------------------------------------------------------------
// The server side (child process): both compositions over one AppHandle.

/** The modules the server process composes the app from, loaded from `src/` (through tsx) or a build's `dist/`. */
function loadServerModules(root: string) {
  const load = <T>(name: string): T => require(path.join(root, name)) as T;
  return {
    ...load<typeof import('../src/app')>('app'),
    ...load<typeof import('../src/audit/audit-writer')>('audit/audit-writer'),
    ...load<typeof import('../src/auth/access-guard')>('auth/access-guard'),
    ...load<typeof import('../src/auth/auth-router')>('auth/auth-router'),
    ...load<typeof import('../src/auth/request-access')>('auth/request-access'),
    ...load<typeof import('../src/config')>('config'),
    ...load<typeof import('../src/dicom/pixel-image-cache')>('dicom/pixel-image-cache'),
    ...load<typeof import('../src/dicom/transcode-hook')>('dicom/transcode-hook'),
    ...load<typeof import('../src/dicomweb/routes')>('dicomweb/routes'),
    ...load<typeof import('../src/fhir/dicom/imaging-study-sync')>('fhir/dicom/imaging-study-sync'),
    ...load<typeof import('../src/fhir/routes')>('fhir/routes'),
  };
}
type ServerModules = ReturnType<typeof loadServerModules>;

/**
 * The protocol routers exactly as app.ts mounts them, minus the access layer: request ids and
 * logging, health, CORS, DICOMweb, FHIR, 404 and the error handler. With `guardWithoutAudit`,
 * the token check, policy and row filters go back in but not the audit gate (diagnostic: it
 * splits the guard's cost from the audit write's).
 */
function composeBare(m: ServerModules, handle: AppHandle, options: { guardWithoutAudit?: boolean; auditWriter?: AuditWriter; lateReadAudit?: AuditWriter; earlyReadAudit?: AuditWriter } = {}): Express {
  const { config, db, blobs, logger } = handle;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(
    pinoHttp({
      logger,
      genReqId: (req, res) => {
        const given = req.headers['x-request-id'];
        const id = typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) ? given : randomUUID();
        res.setHeader('X-Request-Id', id);
        return id;
      },
      customLogLevel: (_req, res, err) => (err || res.statusCode >= 500 ? 'error' : res.statusCode >= 400 ? 'warn' : 'info'),
    }),
  );
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  if (options.guardWithoutAudit) {
    app.use(m.createAuthRouter(handle.auth));
    // The guard's chain without its first element, the audit gate.
    app.use(m.createAccessGuard(handle.auth).slice(1));
  } else if (options.auditWriter) {
    // The whole guard, its audit gate queueing on the given writer instead of the app's.
    app.use(m.createAuthRouter(handle.auth));
    app.use(m.createAccessGuard({ ...handle.auth, audit: { ...handle.auth.audit, writer: options.auditWriter } }));
  } else if (options.lateReadAudit) {
    // The whole guard, reads' AuditEvents written only once the answer is ready (no overlap).
    app.use(m.createAuthRouter(handle.auth));
    app.use(m.createAccessGuard({ ...handle.auth, audit: { ...handle.auth.audit, writer: options.lateReadAudit } }, { earlyReadAudit: false }));
  } else if (options.earlyReadAudit) {
    // The same composition with reads' AuditEvents started at authorization (as createApp does).
    app.use(m.createAuthRouter(handle.auth));
    app.use(m.createAccessGuard({ ...handle.auth, audit: { ...handle.auth.audit, writer: options.earlyReadAudit } }));
  }
  app.use(
    '/dicomweb',
    m.createDicomwebRouter({
      db,
      blobs,
      logger,
      config,
      publicBaseUrl: config.publicBaseUrl,
      transcoder: m.createTranscodeHook({ db, blobs }),
      thumbnailCache: m.createRenderedImageCache(),
      onIndexChange: (trx, change, context) => m.syncFhirFromIndex(trx, change, context),
    }),
  );
  const guarded = options.guardWithoutAudit || options.auditWriter !== undefined || options.lateReadAudit !== undefined || options.earlyReadAudit !== undefined;
  app.use('/fhir', m.createFhirRouter({ db, logger, publicBaseUrl: config.publicBaseUrl, accessFilter: guarded ? m.fhirAccessFilter : undefined }));
  app.use((req: Request, res: Response) => {
    res.status(404).json({ error: 'not found', path: req.path });
  });
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    if (res.headersSent) return res.destroy();
    res.status(500).json({ error: 'internal error' });
  });
  return app;
}

function listen(app: Express): Promise<{ server: http.Server; port: number }> {
  return new Promise((resolve, reject) => {
    const server = http.createServer(app);
    server.keepAliveTimeout = 60_000;
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as AddressInfo).port }));
  });
}

async function serve(): Promise<void> {
  const m = loadServerModules(process.env.AUTH_BENCH_SERVER_ROOT ?? path.join(REPO_ROOT, 'src'));
  const { createAuditWriter, auditWriterFor, shutdownApp } = m;
  const handle = await m.createApp(m.loadConfig(process.env));
  const guarded = await listen(handle.express);
  const bare = await listen(composeBare(m, handle));
  const noAudit = await listen(composeBare(m, handle, { guardWithoutAudit: true }));
  // Diagnostic: the full guard with one INSERT (and commit) per AuditEvent, as before group commit.
  const perRequestWriter = createAuditWriter(handle.db.knex, { maxBatch: 1, maxInFlight: 1_000 });
  const perRequest = await listen(composeBare(m, handle, { auditWriter: perRequestWriter }));
  // Diagnostic: the full guard writing reads' AuditEvents after the answer is ready, as before they overlapped the handler.
  // Its own group-commit writer (same options as the app's), so each prints how it batched.
  const lateWriter = createAuditWriter(handle.db.knex);
  const late = await listen(composeBare(m, handle, { lateReadAudit: lateWriter }));
  const earlyWriter = createAuditWriter(handle.db.knex);
  const early = await listen(composeBare(m, handle, { earlyReadAudit: earlyWriter }));
  process.send?.({ guarded: guarded.port, bare: bare.port, noAudit: noAudit.port, perRequest: perRequest.port, late: late.port, early: early.port });
  // The client asks for this process's CPU time around each block (server CPU per request).
  process.on('message', (m) => {
    if (m === 'cpu') {
      const u = process.cpuUsage();
      process.send?.({ cpuMicros: u.user + u.system });
    }
  });
  process.on('SIGTERM', () => {
    for (const [label, writer] of [['guarded', auditWriterFor(handle.db.knex)], ['audit after answer', lateWriter], ['audit early', earlyWriter]] as const) {
      const audit = writer.stats();
      process.stderr.write(`audit group commit (${label}): ${audit.events} AuditEvents in ${audit.batches} INSERTs (${(audit.events / Math.max(1, audit.batches)).toFixed(2)} per INSERT, largest ${audit.largestBatch}), ${audit.corrected} corrected, ${audit.failed} refused\n`);
    }
    guarded.server.close();
    bare.server.close();
    noAudit.server.close();
    perRequest.server.close();
    late.server.close();
    early.server.close();
    // The diagnostic writers hand their pooled connections back before the database closes.
    Promise.allSettled([perRequestWriter, lateWriter, earlyWriter].map((w) => w.close()))
      .then(() => shutdownApp(handle))
      .finally(() => process.exit(0));
  });
}

// ---------------------------------------------------------------------------------------------
// The client side.

/** A bench database named `<prefix><random>` (an engineer's own prefix); drop() removes it. */
async function createPrefixedDatabase(adminUrl: string, prefix: string): Promise<BenchDatabase> {
  const name = `${prefix}bench_${randomBytes(6).toString('hex')}`;
  await sql(adminUrl, `CREATE DATABASE ${name}`);
  return openBenchDatabase(adminUrl, name);
}

async function sql(url: string, text: string): Promise<void> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(text);
  } finally {
    await c.end();
  }
}

/** Median latency of a one-row INSERT in its own transaction (the WAL flush every durable commit waits for). */
async function commitFloor(url: string): Promise<number> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    // A logged table: temporary ones write no WAL, and their commits wait for nothing.
    await c.query('CREATE TABLE bench_commit_floor (id serial primary key, body text)');
    const ms: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t0 = process.hrtime.bigint();
      await c.query('INSERT INTO bench_commit_floor (body) VALUES ($1)', ['x'.repeat(1500)]);
      ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    await c.query('DROP TABLE bench_commit_floor');
    return percentile(ms.sort((a, b) => a - b), 50);
  } finally {
    await c.end();
  }
}

/** What a wait for the database costs this process in CPU (waitCost). */
interface WaitCost {
  /** This process's CPU (user + system) per round trip answered at once, µs. */
  immediateMicros: number;
  /** The same statement answered after `waitMs` (pg_sleep on the server), µs. */
  waitedMicros: number;
  waitMs: number;
}

/**
 * The same prepared statement, `SELECT pg_sleep($1)`, sent one at a time and answered at once
 * (0) or after `waitMs`, in alternating rounds: the Node.js work is identical, only the time the
 * process spends idle before the answer differs. On a virtual machine shared with other work, a
 * process that went idle pays for waking up (caches and TLB refilled, the wake-up itself), more
 * the longer it slept: that is the node CPU the durable audit commit adds per request at one
 * client (one more idle wait per request), apart from any code on the audit path.
 */
async function waitCost(url: string, waitMs: number): Promise<WaitCost> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    const statement = { name: 'bench_wait', text: 'SELECT pg_sleep($1)' };
    const once = () => c.query({ ...statement, values: [0] });
    for (let i = 0; i < 50; i++) await once();
    let immediate = 0;
    let waited = 0;
    const perRound = 100;
    const rounds = 3;
    for (let r = 0; r < rounds; r++) {
      for (const seconds of [0, waitMs / 1000]) {
        const before = process.cpuUsage();
        for (let i = 0; i < perRound; i++) await c.query({ ...statement, values: [seconds] });
        const used = process.cpuUsage(before);
        if (seconds === 0) immediate += used.user + used.system;
        else waited += used.user + used.system;
      }
    }
    return { immediateMicros: immediate / (perRound * rounds), waitedMicros: waited / (perRound * rounds), waitMs };
  } finally {
    await c.end();
  }
}

/** The audit trail's own INSERT on the seeded database, alone on one connection (auditInsertCost). */
interface AuditInsertCost {
  /** Median latency of a one-event INSERT and its durable commit, ms. */
  p50Ms: number;
  /** Backend CPU per event, µs, with one event per INSERT (what each request pays at one client). */
  cpuPerEvent: number;
  /** Backend CPU per event, µs, with AUDIT_BATCH events per INSERT (what group commit shares). */
  batchCpuPerEvent: number;
}

const AUDIT_BATCH = 8;

/**
 * The audit write as the writer sends it (the prepared INSERT into the partitioned audit_events,
 * durable commit) on one connection while nothing else runs, in rounds alternating one event per
 * INSERT with AUDIT_BATCH per INSERT. Next to the commit floor it splits a guarded request's audit
 * time into the statement's own cost and what the concurrent handler adds (contention), and shows
 * what sharing a commit saves in PostgreSQL CPU per event. Backend CPU is read from /proc (10 ms
 * ticks: hundreds of events per figure).
 */
async function auditInsertCost(url: string): Promise<AuditInsertCost> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    const pid = ((await c.query('SELECT pg_backend_pid() AS pid')).rows[0] as { pid: number }).pid;
    const cpu = async () => (await procCpuMicros([pid])).get(pid) ?? 0;
    const row = () =>
      serializeAuditRow(
        buildAuditEvent(
          { protocol: 'dicomweb', action: 'search', resourceType: 'ImagingStudy', query: 'GET /dicomweb/studies?PatientID=AUTH-bench-a-0', status: 200, requestId: randomUUID(), projects: ['bench-a'], agent: { subject: 'bench-user', issuer: ISSUER, role: 'data-manager', tokenId: randomUUID(), address: '127.0.0.1' } },
          { observer: 'imaging-lake', baseUrl: 'http://127.0.0.1' },
        ),
      );
    const ms: number[] = [];
    const single = { cpu: 0, events: 0 };
    const batched = { cpu: 0, events: 0 };
    // Prepares both statements on this connection before anything is kept.
    await insertAuditRowsOn(c, [row()]);
    await insertAuditRowsOn(c, Array.from({ length: AUDIT_BATCH }, row));
    for (let round = 0; round < 4; round++) {
      let before = await cpu();
      for (let i = 0; i < 100; i++) {
        const r = row();
        const t0 = process.hrtime.bigint();
        await insertAuditRowsOn(c, [r]);
        ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
      single.cpu += (await cpu()) - before;
      single.events += 100;
      before = await cpu();
      for (let i = 0; i < 100 / AUDIT_BATCH; i++) await insertAuditRowsOn(c, Array.from({ length: AUDIT_BATCH }, row));
      batched.cpu += (await cpu()) - before;
      batched.events += Math.floor(100 / AUDIT_BATCH) * AUDIT_BATCH;
    }
    return { p50Ms: percentile(ms.sort((a, b) => a - b), 50), cpuPerEvent: single.cpu / single.events, batchCpuPerEvent: batched.cpu / batched.events };
  } finally {
    await c.end();
  }
}

/** A read's AuditEvent beside the read against inside its statement (auditInReadStatement). */
interface AuditShapeCost {
  /** p50 ms, this process's CPU µs and the two backends' CPU µs per read, for each shape. */
  beside: { p50Ms: number; nodeMicros: number; pgMicros: number };
  inside: { p50Ms: number; nodeMicros: number; pgMicros: number };
}

/** The same two shapes with SHAPE_CLIENTS readers at once (auditShapeCostConcurrent). */
interface AuditShapeConcurrentCost {
  beside: { readsPerSecond: number; nodeMicros: number; pgMicros: number };
  inside: { readsPerSecond: number; nodeMicros: number; pgMicros: number };
  /** Events per INSERT of the group-commit writer in the `beside` rounds. */
  eventsPerInsert: number;
}

const SHAPE_CLIENTS = 16;

/**
 * Diagnostic for the design of the read audit (issue 5): a FHIR read of a seeded Patient, with
 * the caller's project filter, and its AuditEvent written durably before the answer, two ways,
 * on prepared statements over two connections while the server is idle, in alternating rounds:
 *   - beside (as the gate does now at one client): the audit INSERT on one connection and the
 *     read on the other, sent at once, the answer waiting for both;
 *   - inside: one statement, `WITH a AS (INSERT INTO audit_events ...) SELECT ...`: one round
 *     trip, one backend and one commit per read, and one idle wait for the caller instead of two
 *     answers arriving apart.
 * The read's text mirrors readCurrent's (src/fhir/store/resource-store.ts) with fhirAccessFilter.
 */
async function auditShapeCost(url: string, patientIds: string[], project: string): Promise<AuditShapeCost> {
  // node-postgres takes $n placeholders: numbered in text order (the INSERT's first, inside).
  const positional = (sql: string) => {
    let n = 0;
    return sql.replace(/\?/g, () => `$${++n}`);
  };
  const statements = shapeStatements();
  const read = positional(statements.read);
  const inside = positional(statements.inside);
  const auditConn = new Client({ connectionString: url });
  const readConn = new Client({ connectionString: url });
  await auditConn.connect();
  await readConn.connect();
  try {
    const pids = [auditConn, readConn].map(async (c) => ((await c.query('SELECT pg_backend_pid() AS pid')).rows[0] as { pid: number }).pid);
    const backends = await Promise.all(pids);
    const row = (id: string) =>
      serializeAuditRow(
        buildAuditEvent(
          { protocol: 'fhir', action: 'read', resourceType: 'Patient', resourceId: id, status: 200, requestId: randomUUID(), projects: [project], agent: { subject: 'bench-user', issuer: ISSUER, role: 'data-manager', tokenId: randomUUID(), address: '127.0.0.1' } },
          { observer: 'imaging-lake', baseUrl: 'http://127.0.0.1' },
        ),
      );
    const shapes = {
      beside: async (id: string) => {
        const r = row(id);
        const [, answer] = await Promise.all([insertAuditRowsOn(auditConn, [r]), readConn.query({ name: 'bench_read', text: read, values: ['Patient', id, [project]] })]);
        if (answer.rows.length !== 1) throw new Error('auditShapeCost: the read found no Patient');
      },
      inside: async (id: string) => {
        const r = row(id);
        const answer = await readConn.query({ name: 'bench_read_audited', text: inside, values: [...r.columns, r.resource, 'Patient', id, [project]] });
        if (answer.rows.length !== 1) throw new Error('auditShapeCost: the read found no Patient');
      },
    };
    for (let i = 0; i < 30; i++) for (const f of Object.values(shapes)) await f(patientIds[i % patientIds.length]);
    const totals = { beside: { ms: [] as number[], node: 0, pg: 0, n: 0 }, inside: { ms: [] as number[], node: 0, pg: 0, n: 0 } };
    for (let round = 0; round < 6; round++) {
      for (const name of round % 2 === 0 ? (['beside', 'inside'] as const) : (['inside', 'beside'] as const)) {
        const t = totals[name];
        const pgBefore = await procCpuMicros(backends);
        const before = process.cpuUsage();
        for (let i = 0; i < 100; i++) {
          const t0 = process.hrtime.bigint();
          await shapes[name](patientIds[(round * 100 + i) % patientIds.length]);
          t.ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
        }
        const used = process.cpuUsage(before);
        t.node += used.user + used.system;
        t.pg += pgDelta(pgBefore, await procCpuMicros(backends));
        t.n += 100;
      }
    }
    const figures = (t: (typeof totals)['beside']) => ({ p50Ms: percentile(t.ms.sort((a, b) => a - b), 50), nodeMicros: t.node / t.n, pgMicros: t.pg / t.n });
    return { beside: figures(totals.beside), inside: figures(totals.inside) };
  } finally {
    await Promise.all([auditConn.end(), readConn.end()]);
  }
}

/** The read of auditShapeCost with `?` placeholders (queryPrepared), and the same with its AuditEvent INSERT inside. */
function shapeStatements(): { read: string; inside: string } {
  const columns = ROW_COLUMNS;
  const read = `SELECT r.rid, r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.content FROM fhir_resource r WHERE r.resource_type = ? AND r.id = ? AND (EXISTS (SELECT 1 FROM project_resources pr WHERE pr.resource_type = r.resource_type AND pr.resource_id = r.id AND pr.project_id = ANY(?::text[])))`;
  const inside = `WITH a AS (INSERT INTO audit_events (${columns.map(([n]) => n).join(', ')}) VALUES (${columns.map(([, t]) => `?::${t}`).join(', ')}) RETURNING 1) ${read}`;
  return { read, inside };
}

/**
 * auditShapeCost's two shapes with SHAPE_CLIENTS readers at once over one knex pool: `beside`
 * through the real group-commit writer (concurrent reads share an INSERT and its commit),
 * `inside` with each read committing its own INSERT. Alternating rounds; reads per second, this
 * process's CPU and the pool's backends' CPU per read. Where the two differ from the one-client
 * figures is what a design change of the read audit would trade.
 */
async function auditShapeCostConcurrent(url: string, patientIds: string[], project: string): Promise<AuditShapeConcurrentCost> {
  const application = `bench-audit-shape-${randomUUID().slice(0, 8)}`;
  const knex = knexFactory({ client: 'pg', connection: { connectionString: url, application_name: application }, pool: { min: SHAPE_CLIENTS + 2, max: SHAPE_CLIENTS + 2 } });
  const writer = createAuditWriter(knex);
  const { read, inside } = shapeStatements();
  const event = (id: string) =>
    buildAuditEvent(
      { protocol: 'fhir', action: 'read', resourceType: 'Patient', resourceId: id, status: 200, requestId: randomUUID(), projects: [project], agent: { subject: 'bench-user', issuer: ISSUER, role: 'data-manager', tokenId: randomUUID(), address: '127.0.0.1' } },
      { observer: 'imaging-lake', baseUrl: 'http://127.0.0.1' },
    );
  const found = (rows: unknown[]) => {
    if (rows.length !== 1) throw new Error('auditShapeCostConcurrent: the read found no Patient');
  };
  const shapes = {
    beside: async (id: string) => {
      const written = writer.write(event(id), { now: true });
      written.catch(() => undefined);
      found(await queryPrepared(knex, read, ['Patient', id, [project]]));
      await written;
    },
    inside: async (id: string) => {
      const r = serializeAuditRow(event(id));
      found(await queryPrepared(knex, inside, [...r.columns, r.resource, 'Patient', id, [project]]));
    },
  };
  const run = async (f: (id: string) => Promise<void>, n: number, offset: number) => {
    let next = 0;
    await Promise.all(
      Array.from({ length: SHAPE_CLIENTS }, async () => {
        for (let i = next++; i < n; i = next++) await f(patientIds[(offset + i) % patientIds.length]);
      }),
    );
  };
  try {
    for (const f of Object.values(shapes)) await run(f, 200, 0);
    const pids = ((await knex.raw('SELECT pid FROM pg_stat_activity WHERE application_name = ?', [application])) as { rows: Array<{ pid: number }> }).rows.map((r) => r.pid);
    const totals = { beside: { s: 0, node: 0, pg: 0, n: 0 }, inside: { s: 0, node: 0, pg: 0, n: 0 } };
    const perRound = 400;
    const before = writer.stats();
    for (let round = 0; round < 4; round++) {
      for (const name of round % 2 === 0 ? (['beside', 'inside'] as const) : (['inside', 'beside'] as const)) {
        const t = totals[name];
        const pgBefore = await procCpuMicros(pids);
        const cpuBefore = process.cpuUsage();
        const t0 = process.hrtime.bigint();
        await run(shapes[name], perRound, round * perRound);
        t.s += Number(process.hrtime.bigint() - t0) / 1e9;
        const used = process.cpuUsage(cpuBefore);
        t.node += used.user + used.system;
        t.pg += pgDelta(pgBefore, await procCpuMicros(pids));
        t.n += perRound;
      }
    }
    const after = writer.stats();
    const figures = (t: (typeof totals)['beside']) => ({ readsPerSecond: t.n / t.s, nodeMicros: t.node / t.n, pgMicros: t.pg / t.n });
    return { beside: figures(totals.beside), inside: figures(totals.inside), eventsPerInsert: (after.events - before.events) / Math.max(1, after.batches - before.batches) };
  } finally {
    await writer.close();
    await knex.destroy();
  }
}

interface Answer {
  status: number;
  body: Buffer;
  ms: number;
}

function call(agent: http.Agent, port: number, method: string, pathAndQuery: string, headers: Record<string, string>, body?: Buffer): Promise<Answer> {
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: pathAndQuery, agent, headers: body ? { ...headers, 'Content-Length': String(body.length) } : headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), ms: Number(process.hrtime.bigint() - started) / 1e6 }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** One measured call: a path per request index and the check of its answer. */
interface Workload {
  name: string;
  path: (i: number) => string;
  accept: string;
  check: (a: Answer) => string | undefined;
}

interface Block {
  latencies: number[];
  seconds: number;
  /** Server process CPU (user + system) over the block, µs. */
  cpuMicros: number;
  /** CPU of the bench database's PostgreSQL backends over the block, µs (0 when not readable). */
  pgCpuMicros: number;
}

/** CPU time so far (µs) of the server process (over IPC) and of the bench database's backends (/proc). */
let serverCpu: () => Promise<{ node: number; pg: Map<number, number> }> = async () => ({ node: 0, pg: new Map() });

/** CPU the backends used between two readings (a backend started meanwhile counts from 0; one that ended is lost). */
function pgDelta(before: Map<number, number>, after: Map<number, number>): number {
  let sum = 0;
  for (const [pid, micros] of after) sum += micros - (before.get(pid) ?? 0);
  return sum;
}

/** Sends `count` requests at `concurrency` over keep-alive connections; throws on any unexpected answer. */
async function runBlock(port: number, headers: Record<string, string>, w: Workload, count: number, concurrency: number, offset: number): Promise<Block> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
  const latencies: number[] = [];
  let next = 0;
  const cpuBefore = await serverCpu();
  const started = process.hrtime.bigint();
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= count) return;
      const a = await call(agent, port, 'GET', w.path(offset + i), { Accept: w.accept, ...headers });
      const problem = a.status === 200 ? w.check(a) : `status ${a.status}: ${a.body.toString('utf8').slice(0, 200)}`;
      if (problem) throw new Error(`${w.name} on port ${port}: ${problem}`);
      latencies.push(a.ms);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpuAfter = await serverCpu();
  agent.destroy();
  return { latencies, seconds, cpuMicros: cpuAfter.node - cpuBefore.node, pgCpuMicros: pgDelta(cpuBefore.pg, cpuAfter.pg) };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

interface Figures {
  p50: number;
  p95: number;
  rps: number;
  /** Server process CPU per request, µs. */
  cpuPerRequest: number;
  /** The bench database's PostgreSQL backends' CPU per request, µs (WAL writer and other shared processes not counted). */
  pgCpuPerRequest: number;
}

function summarize(blocks: Block[]): Figures {
  const all = blocks.flatMap((b) => b.latencies).sort((a, b) => a - b);
  const seconds = blocks.reduce((s, b) => s + b.seconds, 0);
  const cpu = blocks.reduce((s, b) => s + b.cpuMicros, 0);
  const pgCpu = blocks.reduce((s, b) => s + b.pgCpuMicros, 0);
  return { p50: percentile(all, 50), p95: percentile(all, 95), rps: all.length / seconds, cpuPerRequest: cpu / Math.max(1, all.length), pgCpuPerRequest: pgCpu / Math.max(1, all.length) };
}

/** Seeds both projects: studies through STOW-RS, Patients through FHIR, all on the guarded port. */
async function seed(port: number, admin: string, manager: string): Promise<{ patientIds: string[]; patientIdsFhir: string[] }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const patientIds: string[] = [];
  const patientIdsFhir: string[] = [];
  for (const project of ['bench-a', 'bench-b']) {
    for (let i = 0; i < 100; i++) {
      const patientID = `AUTH-${project}-${i}`;
      const inst = createSyntheticInstance({ patientID, patientName: `Bench^${project}${i}`, rows: 16, columns: 16, bitsAllocated: 8 });
      const boundary = `b-${randomUUID()}`;
      const body = Buffer.concat([Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`), inst.bytes, Buffer.from(`\r\n--${boundary}--\r\n`)]);
      const a = await call(agent, port, 'POST', '/dicomweb/studies', { Authorization: `Bearer ${admin}`, 'X-Project': project, 'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}` }, body);
      if (a.status !== 200) throw new Error(`seeding STOW answered ${a.status}: ${a.body.toString('utf8').slice(0, 200)}`);
      if (project === 'bench-a') patientIds.push(patientID);
    }
  }
  for (let i = 0; i < 100; i++) {
    const body = Buffer.from(JSON.stringify({ resourceType: 'Patient', name: [{ family: `Bench${i}` }] }));
    const a = await call(agent, port, 'POST', '/fhir/Patient', { Authorization: `Bearer ${manager}`, 'Content-Type': 'application/fhir+json' }, body);
    if (a.status !== 201) throw new Error(`seeding FHIR answered ${a.status}: ${a.body.toString('utf8').slice(0, 200)}`);
    patientIdsFhir.push(JSON.parse(a.body.toString('utf8')).id);
  }
  agent.destroy();
  return { patientIds, patientIdsFhir };
}

interface Row {
  workload: string;
  concurrency: number;
  bare: Figures;
  /** The other variants, those that were measured (--variants). */
  guarded?: Figures;
  noAudit?: Figures;
  perRequest?: Figures;
  late?: Figures;
  early?: Figures;
}

type Variant = 'bare' | 'guarded' | 'noAudit' | 'perRequest' | 'late' | 'early';
const VARIANTS: readonly Variant[] = ['bare', 'guarded', 'noAudit', 'perRequest', 'late', 'early'];
type Ports = Record<Variant, number>;

async function measure(ports: Ports, token: string, workloads: Workload[], requests: number, levels: number[], variants: readonly Variant[]): Promise<Row[]> {
  const rows: Row[] = [];
  const rounds = 4;
  for (const w of workloads) {
    for (const concurrency of levels) {
      const count = Math.round((requests * (concurrency === 1 ? 1 : 2)) / rounds);
      // Warm both (JIT, pools, the token cache) before anything is kept.
      const headers = (v: Variant): Record<string, string> => (v === 'bare' ? {} : { Authorization: `Bearer ${token}` });
      for (const v of variants) await runBlock(ports[v], headers(v), w, Math.min(200, count), concurrency, 0);
      const blocks: Record<Variant, Block[]> = { bare: [], guarded: [], noAudit: [], perRequest: [], late: [], early: [] };
      for (let r = 0; r < rounds; r++) {
        // Rotate which variant goes first, so drift (autovacuum, caches) hits all alike.
        const order: Variant[] = variants.map((_, k, all) => all[(k + r) % all.length]);
        for (const v of order) blocks[v].push(await runBlock(ports[v], headers(v), w, count, concurrency, r * count));
      }
      const row: Row = { workload: w.name, concurrency, bare: summarize(blocks.bare) };
      for (const v of variants) if (v !== 'bare') row[v] = summarize(blocks[v]);
      rows.push(row);
      process.stderr.write(`  ${w.name} at concurrency ${concurrency}: done\n`);
    }
  }
  return rows;
}

function cpuOf(f: Figures | undefined): string {
  return f ? `${fmt(f.cpuPerRequest, 0)}+${fmt(f.pgCpuPerRequest, 0)}` : '–';
}

/** User + system CPU time (µs) of each of `pids` from /proc (Linux; unreadable ones are left out). */
async function procCpuMicros(pids: number[]): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const pid of pids) {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    if (!stat) continue;
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    out.set(pid, (((Number(fields[11]) || 0) + (Number(fields[12]) || 0)) / CLOCK_TICKS) * 1e6);
  }
  return out;
}

/** USER_HZ on Linux. */
const CLOCK_TICKS = 100;

function renderTable(rows: Row[]): string {
  // A variant left out by --variants shows as a dash.
  const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? '–' : `${fmt(a / b, 2)}x`);
  const ms = (f: Figures | undefined, key: 'p50' | 'p95') => (f ? fmt(f[key], 2) : '–');
  return markdownTable(
    ['call', 'conc.', 'bare p50 ms', 'guarded p50 ms', 'p50 ratio', 'bare p95 ms', 'guarded p95 ms', 'p95 ratio', 'bare req/s', 'guarded req/s', 'throughput ratio', 'CPU µs/req node+pg bare', 'CPU µs/req node+pg guarded', 'guard w/o audit: p50 ratio', 'guard w/o audit: throughput ratio', 'guard w/o audit: CPU µs/req node+pg', 'audit after answer: p50 ratio', 'audit after answer: throughput ratio', 'audit after answer: CPU µs/req node+pg', 'same composition, audit early: p50 ratio', 'same composition, audit early: throughput ratio', 'same composition, audit early: CPU µs/req node+pg', 'INSERT per request: p50 ratio', 'INSERT per request: throughput ratio', 'INSERT per request: CPU µs/req node+pg'],
    rows.map((r) => [
      r.workload,
      String(r.concurrency),
      ms(r.bare, 'p50'),
      ms(r.guarded, 'p50'),
      ratio(r.guarded?.p50, r.bare.p50),
      ms(r.bare, 'p95'),
      ms(r.guarded, 'p95'),
      ratio(r.guarded?.p95, r.bare.p95),
      fmt(r.bare.rps, 0),
      r.guarded ? fmt(r.guarded.rps, 0) : '–',
      ratio(r.bare.rps, r.guarded?.rps),
      cpuOf(r.bare),
      cpuOf(r.guarded),
      ratio(r.noAudit?.p50, r.bare.p50),
      ratio(r.bare.rps, r.noAudit?.rps),
      cpuOf(r.noAudit),
      ratio(r.late?.p50, r.bare.p50),
      ratio(r.bare.rps, r.late?.rps),
      cpuOf(r.late),
      ratio(r.early?.p50, r.bare.p50),
      ratio(r.bare.rps, r.early?.rps),
      cpuOf(r.early),
      ratio(r.perRequest?.p50, r.bare.p50),
      ratio(r.bare.rps, r.perRequest?.rps),
      cpuOf(r.perRequest),
    ]),
    ['l', ...Array.from({ length: 24 }, () => 'r' as const)],
  );
}

/**
 * The guard's steps one at a time, in this process: what each costs per request in µs (median
 * of 5 timed loops). Shows what the token cache saves and how small the rest is next to a
 * ~1 ms read; the remaining overhead of the guard is in the row filter's SQL and the audit write.
 */
async function measureGuardSteps(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'il-bench-auth-steps-'));
  try {
    const config = loadConfig({ DATA_DIR: dir, AUTH_ISSUER: ISSUER }).auth;
    const keys = await openKeyStore(config);
    const token = (await mintLocalToken({ role: 'data-manager', projects: ['bench-a'], ttlSeconds: 3600 }, { config, keys })).accessToken;
    const verifier = createBearerVerifier({ keys, config });
    const principal = await verifier.verify(token);
    const req = { headers: { authorization: `Bearer ${token}` }, method: 'GET', query: {}, originalUrl: '/dicomweb/studies?PatientID=X' } as unknown as Request;
    const decision = decide(principal, { resourceType: 'ImagingStudy', interaction: 'search', projectIds: [] });
    const steps: Array<[string, number, () => unknown]> = [
      ['bearer header parsing', 50_000, () => bearerTokenOf(req, config.cookieName)],
      [`signature check, uncached (jwtVerify, ${config.signingAlg})`, 500, () => verifyLocalAccessToken({ keys, config }, token)],
      ['verifier, cache hit', 50_000, () => verifier.verify(token)],
      ['classifyRequest, QIDO /dicomweb/studies', 50_000, () => classifyRequest('GET', '/dicomweb/studies')],
      ['classifyRequest, FHIR read Patient/{id}', 50_000, () => classifyRequest('GET', '/fhir/Patient/0b9c4c55')],
      ['requested projects (X-Project, ?project)', 50_000, () => requestedProjects(req)],
      ['decide (role, scopes, rows)', 50_000, () => decide(principal, { resourceType: 'ImagingStudy', interaction: 'search', projectIds: [] })],
      ['study row filter builder', 50_000, () => studyRestrictionFor(decision)],
    ];
    const rows: string[][] = [];
    for (const [name, n, f] of steps) {
      for (let i = 0; i < Math.min(n, 1_000); i++) await f();
      const loops: number[] = [];
      for (let k = 0; k < 5; k++) {
        const t0 = process.hrtime.bigint();
        for (let i = 0; i < n; i++) await f();
        loops.push(Number(process.hrtime.bigint() - t0) / 1e3 / n);
      }
      rows.push([name, fmt(percentile(loops.sort((a, b) => a - b), 50), 2)]);
    }
    return markdownTable(['step', 'µs per request'], rows, ['l', 'r']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  if (options.steps) {
    process.stdout.write(`\nThe guard's steps one by one (this process, no database; load average ${os.loadavg().map((l) => l.toFixed(2)).join(', ')} on ${os.cpus().length} CPUs)\n\n${await measureGuardSteps()}\n`);
    return;
  }
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'il-bench-auth-'));
  // Kept after the run (the DATA_DIR is not), for `npx tsx bench/cpu-profile-summary.ts FILE` or DevTools.
  const profileDir = options.cpuProf ? await mkdtemp(path.join(os.tmpdir(), 'il-bench-auth-prof-')) : '';
  let database: BenchDatabase | undefined;
  let child: ChildProcess | undefined;
  let statClient: Client | undefined;
  const loadAtStart = os.loadavg();
  try {
    if (options.db === 'postgres') database = options.dbPrefix ? await createPrefixedDatabase(options.adminUrl, options.dbPrefix) : await createBenchDatabase(options.adminUrl);
    if (database && options.asyncCommit) await sql(options.adminUrl, `ALTER DATABASE ${database.name} SET synchronous_commit = off`);
    const floor = database ? await commitFloor(database.url) : undefined;
    // Before anything else runs: what the commit floor's wait costs a Node.js process here.
    const wait = database && floor !== undefined ? await waitCost(database.url, Math.max(0.2, floor)) : undefined;
    const env: Record<string, string> = {
      DATA_DIR: dataDir,
      AUTH_ISSUER: ISSUER,
      LOG_LEVEL: 'info',
      SWEEP_INTERVAL_SECONDS: '0',
      ...(database ? { DATABASE_URL: database.url } : {}),
    };
    // The servers run in their own process (logs to /dev/null), so the load generator does not share their event loop.
    // From the build: the node flags every launcher gives the server (bin/server-node-flags.js).
    const serverRoot = options.server.kind === 'dist' ? path.join(options.server.root, 'dist') : undefined;
    const serverSrc = options.server.kind === 'src' && options.server.root !== REPO_ROOT ? path.join(options.server.root, 'src') : undefined;
    if (options.server.kind === 'dist' && options.server.root === REPO_ROOT) {
      const stale = staleBuildWarning(REPO_ROOT);
      if (stale) process.stderr.write(`${stale}\n`);
    }
    const execArgv = ['--import', 'tsx', ...(serverRoot ? SERVER_NODE_FLAGS : []), ...(options.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [])];
    child = fork(__filename, ['--serve'], { env: { ...process.env, ...env, ...(serverRoot ?? serverSrc ? { AUTH_BENCH_SERVER_ROOT: serverRoot ?? serverSrc } : {}) }, execArgv, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    process.stderr.write(`server process: ${serverRoot ? `${serverRoot} (built)` : `${serverSrc ?? 'src/'} through tsx`}\n`);
    const ports = await new Promise<Ports>((resolve, reject) => {
      child!.once('message', (m) => resolve(m as Ports));
      child!.once('exit', (code) => reject(new Error(`the server process exited with ${code}`)));
    });
    const server = child;
    const nodeCpu = () =>
      new Promise<number>((resolve) => {
        const onMessage = (m: unknown) => {
          if (typeof (m as { cpuMicros?: unknown })?.cpuMicros !== 'number') return;
          server.off('message', onMessage);
          resolve((m as { cpuMicros: number }).cpuMicros);
        };
        server.on('message', onMessage);
        server.send('cpu');
      });
    // The server's pool connections to the bench database (this client's own backend excluded).
    const stat = database ? new Client({ connectionString: database.url }) : undefined;
    await stat?.connect();
    statClient = stat;
    const backends = async (): Promise<number[]> =>
      stat ? ((await stat.query('SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()')).rows as Array<{ pid: number }>).map((r) => r.pid) : [];
    serverCpu = async () => {
      const pids = await backends();
      const [node, pg] = await Promise.all([nodeCpu(), procCpuMicros(pids)]);
      return { node, pg };
    };
    const auth = loadConfig(env).auth;
    const admin = (await mintLocalToken({ role: 'admin', ttlSeconds: 3600 }, { config: auth })).accessToken;
    const manager = (await mintLocalToken({ role: 'data-manager', projects: ['bench-a'], ttlSeconds: 3600 }, { config: auth })).accessToken;
    process.stderr.write(`seeding 200 studies and 100 FHIR Patients (${options.db})\n`);
    const { patientIds, patientIdsFhir } = await seed(ports.guarded, admin, manager);
    // What autovacuum does within a minute of the seeding on a deployed server (it is off on the
    // shared benchmark server): without statistics the planner starts the guarded study search
    // from every study of the project (a hash of 100 links and 100 probes) instead of the patient's one.
    if (database && options.analyze) await sql(database.url, 'ANALYZE');
    // While the server is idle: the audit INSERT on its own, next to the commit floor.
    const auditCost = database ? await auditInsertCost(database.url) : undefined;
    const shapeCost = database ? await auditShapeCost(database.url, patientIdsFhir, 'bench-a') : undefined;
    const shapeCostConcurrent = database ? await auditShapeCostConcurrent(database.url, patientIdsFhir, 'bench-a') : undefined;

    const workloads: Workload[] = [
      {
        name: 'QIDO-RS /studies?PatientID=',
        path: (i) => `/dicomweb/studies?PatientID=${patientIds[i % patientIds.length]}`,
        accept: 'application/dicom+json',
        check: (a) => ((JSON.parse(a.body.toString('utf8')) as unknown[]).length === 1 ? undefined : 'expected exactly one study'),
      },
      {
        name: 'FHIR read Patient/{id}',
        path: (i) => `/fhir/Patient/${patientIdsFhir[i % patientIdsFhir.length]}`,
        accept: 'application/fhir+json',
        check: (a) => (JSON.parse(a.body.toString('utf8')).resourceType === 'Patient' ? undefined : 'expected a Patient'),
      },
    ];
    process.stderr.write(`measuring ${options.requests} requests per variant and call at concurrency 1, twice that at ${options.concurrency.filter((c) => c > 1).join(', ') || '-'} (data manager of one project)\n`);
    const measured = workloads.filter((w) => options.calls.includes(w.name.startsWith('QIDO') ? 'qido' : 'fhir'));
    const rows = await measure(ports, manager, measured, options.requests, options.concurrency, options.variants);
    const table = renderTable(rows);
    const worst = Math.max(...rows.flatMap((r) => (r.guarded ? [r.guarded.p50 / r.bare.p50, r.bare.rps / r.guarded.rps] : [])));
    const verdict = !options.variants.includes('guarded')
      ? 'not measured (--variants without guarded)'
      : worst < TARGET_RATIO
        ? `met: every p50 and throughput ratio is under ${TARGET_RATIO}x (worst ${fmt(worst, 2)}x)`
        : `missed: worst p50/throughput ratio ${fmt(worst, 2)}x, target under ${TARGET_RATIO}x`;
    const engine = database ? `PostgreSQL ${await database.serverVersion()}` : 'embedded PostgreSQL (PGlite)';
    const floorLine =
      floor === undefined
        ? ''
        : `One-row INSERT commit on this database (the durable audit write's floor): ${fmt(floor, 2)} ms${options.asyncCommit ? ' (synchronous_commit=off: diagnostic run)' : ''}.` +
          (auditCost
            ? ` The AuditEvent INSERT alone on one connection (idle server): ${fmt(auditCost.p50Ms, 2)} ms p50 to its commit, backend CPU ${fmt(auditCost.cpuPerEvent, 0)} µs per event at one event per INSERT, ${fmt(auditCost.batchCpuPerEvent, 0)} µs at ${AUDIT_BATCH} per INSERT.`
            : '') +
          (wait
            ? ` One database round trip cost this process ${fmt(wait.immediateMicros, 0)} µs of CPU answered at once and ${fmt(wait.waitedMicros, 0)} µs answered after ${fmt(wait.waitMs, 2)} ms (the same statement, pg_sleep): what one more idle wait per request (the audit commit at one client) costs in node CPU here, whatever the code.`
            : '') +
          (shapeCost
            ? ` A FHIR read with its AuditEvent (idle server, one at a time), the INSERT beside the read on a second connection (as now) / inside the read's statement (WITH INSERT ... SELECT): p50 ${fmt(shapeCost.beside.p50Ms, 2)} / ${fmt(shapeCost.inside.p50Ms, 2)} ms, node CPU ${fmt(shapeCost.beside.nodeMicros, 0)} / ${fmt(shapeCost.inside.nodeMicros, 0)} µs, PostgreSQL CPU ${fmt(shapeCost.beside.pgMicros, 0)} / ${fmt(shapeCost.inside.pgMicros, 0)} µs per read.`
            : '') +
          (shapeCostConcurrent
            ? ` The same with ${SHAPE_CLIENTS} readers at once (beside through the group-commit writer, ${fmt(shapeCostConcurrent.eventsPerInsert, 1)} events per INSERT / inside, each read its own commit): ${fmt(shapeCostConcurrent.beside.readsPerSecond, 0)} / ${fmt(shapeCostConcurrent.inside.readsPerSecond, 0)} reads/s, node CPU ${fmt(shapeCostConcurrent.beside.nodeMicros, 0)} / ${fmt(shapeCostConcurrent.inside.nodeMicros, 0)} µs, PostgreSQL CPU ${fmt(shapeCostConcurrent.beside.pgMicros, 0)} / ${fmt(shapeCostConcurrent.inside.pgMicros, 0)} µs per read.`
            : '');
    process.stdout.write(`\nAccess-layer overhead (${engine}); guarded = createApp, bare = the same routers without auth router, guard and audit gate, guard w/o audit = bare plus token check, policy and row filters, audit after answer = guarded without the read audit's overlap, INSERT per request = guarded without group commit\n\n${table}\n\n${floorLine}\nTarget (< ${TARGET_RATIO}x): ${verdict}\n`);
    if (options.write) {
      const date = new Date().toISOString().slice(0, 10);
      const section = [
        `## Access-layer overhead, ${date}: ${engine}${options.asyncCommit ? ', synchronous_commit=off (diagnostic)' : ''}`,
        '',
        `\`npx tsx bench/auth.ts --requests ${options.requests} --concurrency ${options.concurrency.join(',')}${options.db === 'embedded' ? ' --db embedded' : ''}${options.asyncCommit ? ' --async-commit' : ''} --write\`. One server process serves the app as \`createApp\` composes it (guarded: token verification, policy and project row filter, AuditEvent written before the answer) and the same DICOMweb and FHIR routers without the access layer (bare), over one database seeded with 200 studies in two projects and 100 FHIR Patients. Calls as a data manager of one project; blocks alternate between the variants. Throughput ratio is bare/guarded. The guarded app's audit gate uses group commit (concurrent requests share one INSERT and commit; each still waits for its own AuditEvent to commit). Diagnostic columns: *guard w/o audit* puts the token check, policy and row filters back without the audit gate (the rest of the overhead is the AuditEvent written before each answer); *audit after answer* is the full guard writing a read's AuditEvent only once its answer is ready (no overlap with the handler), and *same composition, audit early* the same routers and guard with the AuditEvent started at authorization (as createApp does; compare these two, since createApp also mounts CORS and the privacy router); *INSERT per request* is the full guard with one INSERT and commit per AuditEvent, as before group commit. Server CPU is the server process's user+system time per request (PostgreSQL's is not in it).`,
        '',
        table,
        '',
        floorLine,
        '',
        `Target (< ${TARGET_RATIO}x): ${verdict}.`,
        '',
        ...describeMachine(dataDir, loadAtStart),
      ].join('\n');
      updateResultsFile(RESULTS_FILE, `auth-overhead-${options.db}${options.asyncCommit ? '-async-commit' : ''}-${date}`, section);
      process.stdout.write(`written to ${RESULTS_FILE}\n`);
    }
    process.exitCode = worst < TARGET_RATIO || !options.variants.includes('guarded') ? 0 : 3;
  } catch (err) {
    process.stderr.write(`bench/auth.ts failed: ${(err as Error).stack ?? err}\n`);
    process.exitCode = 1;
  } finally {
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child!.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    if (options.cpuProf) {
      // Every variant's calls are in one profile: compare it with a run of fewer variants, or read the audit frames.
      for (const f of await readdir(profileDir).catch(() => [] as string[])) {
        process.stdout.write(`\n${renderCpuProfile(summariseCpuProfile(path.join(profileDir, f), 40), `server CPU profile (all variants): ${path.join(profileDir, f)}`)}\n`);
      }
    }
    await statClient?.end().catch(() => undefined);
    await database?.drop().catch(() => undefined);
    await rm(dataDir, { recursive: true, force: true });
  }
}

if (process.argv.includes('--serve')) {
  serve().catch((err) => {
    process.stderr.write(`${(err as Error).stack ?? err}\n`);
    process.exit(1);
  });
} else {
  void main();
}
