import { copyFile, mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'pg';
import { startFhirBenchServer } from './lib/fhir-server';
import { checkIndexConsistency, multiplySeed } from './lib/fhir-multiply';
import { measureQuery, type QuerySpec } from './lib/fhir-queries';
import { renderFhirRun, type FhirBenchRun } from './lib/fhir-report';
import { buildSeedBundles, ICD10, PER_PATIENT, postBundles } from './lib/fhir-seed';
import { createBenchDatabase } from './lib/postgres';
import { updateResultsFile } from './lib/report';
import { findFreePort, staleBuildWarning } from './lib/server-process';
import { readCpuSeconds } from './lib/process-stats';
import { renderCpuProfile, summariseCpuProfile } from './lib/cpu-profile';
import knexFactory from 'knex';
import { loadFhirDefinitions } from '../src/fhir/definitions';
import { applyWrites, prepareWrite } from '../src/fhir/store/resource-writer';
import { readCurrent } from '../src/fhir/store/resource-store';
import { benchCli } from './lib/cli';

/**
 * FHIR search latency and ingest benchmark (bench/README.md). On a fresh PostgreSQL database:
 * writes a seed of Patients with ImagingStudy and Condition resources through the engine as
 * transaction Bundles (the ingest figure), multiplies it in SQL to 1,000,000 ImagingStudy and
 * 1,000,000 Condition resources (50,000 with --quick) with index rows consistent with the
 * engine's, checks that consistency on a sample, then times the searches.
 *
 *   npx tsx bench/fhir.ts [--quick] [--write] [--server source|dist] [--rows N] [--keep] [--ingest-only] [--admin-url URL]
 *   npx tsx bench/fhir.ts --database NAME [--server source|dist] [--only a,b] [--cpu-prof] [--admin-url URL]
 *
 * `--database` times the searches only, on a database a `--keep` run loaded (loading a million
 * rows takes a quarter of an hour), so plans can be compared before and after a change; the
 * database is left in place. There, `--only` times the searches whose names start with one of
 * the given prefixes, and `--cpu-prof` runs the built server under `node --cpu-prof` and prints
 * where its main thread spent the time of the timed searches (the .cpuprofile is kept in the
 * temp directory, its path and the searches' time window printed).
 *
 * Exit status: 0 all targets met, 3 only performance targets missed, 1 a request failed, an
 * answer was wrong or the index was inconsistent, 2 bad arguments.
 */

const REPO_ROOT = path.resolve(__dirname, '..');
const RESULTS_FILE = path.join(__dirname, 'RESULTS.md');
const USAGE =
  'usage: npx tsx bench/fhir.ts [--quick] [--write] [--server source|dist] [--rows N] [--keep] [--ingest-only] [--admin-url URL]\n' +
  '       npx tsx bench/fhir.ts --database NAME [--server source|dist] [--only a,b] [--cpu-prof] [--admin-url URL]   (searches only, on a database kept by --keep)\n';
const cli = benchCli('bench/fhir.ts', USAGE);
const usage = cli.usage;
const SEARCH_TARGET_MS = 30;
const INGEST_TARGET = 2_000;
const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);

interface Options {
  quick: boolean;
  write: boolean;
  server: 'source' | 'dist';
  rows: number;
  keep: boolean;
  /** Stop after the ingest phase (no multiply, no searches): quick before/after ingest figures. */
  ingestOnly: boolean;
  adminUrl: string;
  /** An existing, loaded database: only the searches run. */
  database?: string;
  /** With `database`: only the searches whose names start with one of these. */
  only?: string[];
  /** With `database`: profile the server's main thread (needs `--server dist`). */
  cpuProf: boolean;
}

function parseOptions(argv: string[]): Options {
  const values = cli.parse(argv, {
    quick: { type: 'boolean', default: false },
    write: { type: 'boolean', default: false },
    server: { type: 'string', default: 'source' },
    rows: { type: 'string' },
    keep: { type: 'boolean', default: false },
    'ingest-only': { type: 'boolean', default: false },
    'admin-url': { type: 'string', default: 'postgres://postgres@127.0.0.1:5432/postgres' },
    database: { type: 'string' },
    only: { type: 'string' },
    'cpu-prof': { type: 'boolean', default: false },
  });
  const server = String(values.server);
  if (server !== 'source' && server !== 'dist') usage(`--server must be source or dist, not ${server}`);
  const rows = values.rows === undefined ? (values.quick ? 50_000 : 1_000_000) : Number(values.rows);
  if (!Number.isInteger(rows) || rows < 2_000) usage('--rows must be an integer >= 2000');
  const database = values.database === undefined ? undefined : String(values.database);
  if (database !== undefined && !/^[a-z_][a-z0-9_]*$/.test(database)) usage(`--database must be a plain database name, not ${database}`);
  if (database !== undefined && (values.write || values.keep || values['ingest-only'])) usage('--database runs the searches only: no --write, --keep or --ingest-only');
  if (database === undefined && (values.only !== undefined || values['cpu-prof'])) usage('--only and --cpu-prof go with --database');
  if (values['cpu-prof'] && server !== 'dist') usage('--cpu-prof profiles the built server: add --server dist');
  return {
    quick: Boolean(values.quick),
    write: Boolean(values.write),
    server: server as Options['server'],
    rows,
    keep: Boolean(values.keep),
    ingestOnly: Boolean(values['ingest-only']),
    adminUrl: String(values['admin-url']),
    database,
    only: values.only === undefined ? undefined : String(values.only).split(',').filter(Boolean),
    cpuProf: Boolean(values['cpu-prof']),
  };
}


/** Runs the benchmark; resolves with the exit status. */
export async function runFhirBenchmark(argv: string[] = process.argv.slice(2)): Promise<number> {
  const options = parseOptions(argv);
  if (options.database) return runSearchesOnly(options, options.database);
  const command = ['npx tsx bench/fhir.ts', ...argv].join(' ');
  const loadAtStart = os.loadavg();
  if (options.server === 'dist') {
    const stale = staleBuildWarning(REPO_ROOT);
    if (stale) log(`warning: ${stale}`);
  }
  // The seed is the engine-written part: 1,000 patients (500 with --quick), fewer for small --rows.
  const seedPatients = Math.min(options.quick ? 500 : 1_000, Math.floor(options.rows / PER_PATIENT));
  const copies = Math.max(1, Math.round(options.rows / (seedPatients * PER_PATIENT)));
  const workRoot = await mkdtemp(path.join(os.tmpdir(), 'imaging-lake-fhir-bench-'));
  const db = await createBenchDatabase(options.adminUrl);
  log(`work directory ${workRoot}, database ${db.name}`);
  const port = await findFreePort();
  const env = { DATA_DIR: workRoot, DATABASE_URL: db.url, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn', SWEEP_INTERVAL_SECONDS: '0' };
  const { server, authorization } = await startFhirBenchServer(REPO_ROOT, env, options.server);
  try {
    const bundles = buildSeedBundles(seedPatients, 0, `run${Date.now().toString(36)}`);
    log(`seed: ${seedPatients} patients in ${bundles.length} transaction Bundles; ${copies} copies make ${(seedPatients * PER_PATIENT * copies).toLocaleString('en-US')} of each type`);
    const warm = await postBundles(server.baseUrl, authorization, bundles.slice(0, 1), 1);
    if (warm.failures.length) throw new Error(`warm-up Bundle failed: ${warm.failures[0]}`);
    // The seed after the warm-up Bundle in three parts: one, two and four Bundles in flight.
    const third = Math.floor((bundles.length - 1) / 3);
    // CPU of the server process (all threads: validation workers included) and of its PostgreSQL
    // backends per resource written: steadier than resources/s on a shared machine.
    const cpuNow = async () => ({ server: readCpuSeconds(server.pid), db: (await db.backendPids()).reduce((a, pid) => a + readCpuSeconds(pid), 0) });
    const measured = async (label: string, concurrency: number, list: Array<Record<string, unknown>>) => {
      const before = await cpuNow();
      const result = await postBundles(server.baseUrl, authorization, list, concurrency);
      const after = await cpuNow();
      const ms = (s: number) => (s * 1000) / Math.max(1, result.resources);
      return { label, concurrency, result, cpuPerResourceMs: { server: ms(after.server - before.server), db: ms(Math.max(0, after.db - before.db)) } };
    };
    const ingest = [
      await measured('seed, one Bundle at a time', 1, bundles.slice(1, 1 + third)),
      await measured('seed, two Bundles in flight', 2, bundles.slice(1 + third, 1 + 2 * third)),
      await measured('seed, four Bundles in flight', 4, bundles.slice(1 + 2 * third)),
    ];
    const cpuText = (i: (typeof ingest)[number]) => `CPU per resource: server ${i.cpuPerResourceMs.server.toFixed(3)} ms, PostgreSQL ${i.cpuPerResourceMs.db.toFixed(3)} ms`;
    for (const i of ingest) log(`ingest c${i.concurrency}: ${Math.round(i.result.resources / i.result.seconds)} resources/s, ${cpuText(i)} (${i.result.failures.length} failures)`);
    // The large study is written after the searches (it would otherwise be multiplied and searched).
    const studyUpdatePhase = async () => {
      const f = await measureStudyUpdate(db.url, 2_000, options.quick ? 9 : 21);
      log(`STOW-like update of a 2,000-instance ImagingStudy: median ${f.medianMs.toFixed(1)} ms, ${f.indexRowsTouched} index rows inserted+deleted`);
      return f;
    };
    if (options.ingestOnly) {
      await studyUpdatePhase();
      const rates = ingest.map((i) => `c${i.concurrency} ${Math.round(i.result.resources / i.result.seconds)}`).join(', ');
      process.stdout.write(`ingest resources/s: ${rates} (load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')})\n`);
      for (const i of ingest) process.stdout.write(`ingest c${i.concurrency} ${cpuText(i)}\n`);
      return ingest.some((i) => i.result.failures.length > 0) ? 1 : 0;
    }

    const multiply = await multiplySeed(db.url, copies, log);
    const consistency = await checkIndexConsistency(db.url, 25);
    log(`index consistency: ${consistency.checked} resources, ${consistency.mismatches.length} mismatches`);
    const facts = await readFacts(db.url);
    const queries = await runQueries(server.baseUrl, authorization, facts.patientIds, options.quick);
    const studyUpdate = await studyUpdatePhase();

    const run: FhirBenchRun = {
      command,
      stamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      quick: options.quick,
      workRoot,
      loadAtStart,
      serverFrom: options.server,
      pgVersion: await db.serverVersion(),
      ingest,
      multiply,
      counts: facts.counts,
      indexRows: facts.indexRows,
      databaseBytes: facts.databaseBytes,
      consistency,
      queries,
      ingestTarget: INGEST_TARGET,
    };
    const section = `${renderFhirRun(run)}\n\n${renderStudyUpdate(studyUpdate)}`;
    process.stdout.write(`${section}\n`);
    if (options.write) {
      const key = `fhir-${options.quick ? 'quick' : 'full'}-postgres`;
      updateResultsFile(RESULTS_FILE, key, section);
      log(`updated ${path.relative(REPO_ROOT, RESULTS_FILE)} section ${key}`);
    }
    const broken = consistency.mismatches.length > 0 || ingest.some((i) => i.result.failures.length > 0) || queries.some((q) => q.result.failures.length > 0);
    if (broken) return 1;
    const fast = ingest[ingest.length - 1].result;
    const missed = fast.resources / fast.seconds < INGEST_TARGET || queries.some((q) => q.spec.targetP95Ms !== undefined && q.result.p95 >= q.spec.targetP95Ms);
    return missed ? 3 : 0;
  } catch (err) {
    log(`server ${server.exited() ? `exited (${server.exited()})` : 'still running'}; its last output:\n${server.outputTail()}`);
    throw err;
  } finally {
    await server.stop();
    if (options.keep) log(`kept ${workRoot} and database ${db.name}`);
    else {
      await db.drop();
      await rm(workRoot, { recursive: true, force: true });
    }
  }
}

/** Times the searches on a database an earlier `--keep` run loaded; prints one line per search. */
async function runSearchesOnly(options: Options, database: string): Promise<number> {
  if (options.server === 'dist') {
    const stale = staleBuildWarning(REPO_ROOT);
    if (stale) log(`warning: ${stale}`);
  }
  const url = new URL(options.adminUrl);
  url.pathname = `/${database}`;
  const workRoot = await mkdtemp(path.join(os.tmpdir(), 'imaging-lake-fhir-bench-'));
  const port = await findFreePort();
  const env = { DATA_DIR: workRoot, DATABASE_URL: url.toString(), PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn', SWEEP_INTERVAL_SECONDS: '0' };
  const nodeFlags = options.cpuProf ? ['--cpu-prof', '--cpu-prof-dir', workRoot] : [];
  const { server, authorization } = await startFhirBenchServer(REPO_ROOT, env, options.server, nodeFlags);
  let window: { fromUs: number; toUs: number } | undefined;
  try {
    const facts = await readFacts(url.toString(), false);
    log(`database ${database}: ${Object.entries(facts.counts).map(([t, n]) => `${n.toLocaleString('en-US')} ${t}`).join(', ')}`);
    // CPU per request of the server process and of its PostgreSQL backends (/proc), steadier
    // than wall-clock figures on a shared machine.
    const backends = async () => {
      const c = new Client({ connectionString: url.toString() });
      await c.connect();
      try {
        return (await c.query('SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()')).rows.map((r) => Number(r.pid));
      } finally {
        await c.end();
      }
    };
    // Per backend pid: a connection the pool opened during a search counts from zero; one it
    // closed is left out (its last CPU cannot be read), so the PostgreSQL figure is a floor.
    const cpu: Array<{ server: number; db: number; closed: number }> = [];
    let before = { server: 0, db: new Map<number, number>() };
    const queries = await runQueries(server.baseUrl, authorization, facts.patientIds, options.quick, options.only, async (phase) => {
      const us = Number(process.hrtime.bigint() / 1000n);
      if (phase === 'before' && !window) window = { fromUs: us, toUs: us };
      if (phase === 'after' && window) window.toUs = us;
      const now = { server: readCpuSeconds(server.pid), db: new Map((await backends()).map((pid) => [pid, readCpuSeconds(pid)])) };
      if (phase === 'after') {
        let db = 0;
        for (const [pid, seconds] of now.db) if (seconds > 0) db += seconds - (before.db.get(pid) ?? 0);
        cpu.push({ server: now.server - before.server, db, closed: [...before.db.keys()].filter((pid) => !now.db.has(pid)).length });
      }
      before = now;
    });
    for (const [i, q] of queries.entries()) {
      const perRequest = (s: number) => ((s * 1000) / (q.result.n + (options.quick ? 10 : 20))).toFixed(2);
      process.stdout.write(
        `${q.spec.name}: p50 ${q.result.p50.toFixed(1)} ms, p95 ${q.result.p95.toFixed(1)} ms, max ${q.result.max.toFixed(1)} ms; ` +
          `CPU per request: server ${perRequest(cpu[i].server)} ms, PostgreSQL ${perRequest(cpu[i].db)} ms${cpu[i].closed ? ` (${cpu[i].closed} backends closed meanwhile, not counted)` : ''}; ${q.result.failures.length} failures\n`,
      );
      for (const f of q.result.failures.slice(0, 3)) process.stdout.write(`  ${f}\n`);
    }
    if (queries.some((q) => q.result.failures.length > 0)) return 1;
    return queries.some((q) => q.spec.targetP95Ms !== undefined && q.result.p95 >= q.spec.targetP95Ms) ? 3 : 0;
  } catch (err) {
    log(`server ${server.exited() ? `exited (${server.exited()})` : 'still running'}; its last output:\n${server.outputTail()}`);
    throw err;
  } finally {
    await server.stop();
    if (options.cpuProf) {
      const file = (await readdir(workRoot)).find((f) => f.endsWith('.cpuprofile'));
      if (file) {
        // Kept outside the work directory (removed below) for a closer look: cpu-profile-summary.ts or DevTools.
        const kept = path.join(os.tmpdir(), `imaging-lake-fhir-search-${Date.now()}.cpuprofile`);
        await copyFile(path.join(workRoot, file), kept);
        process.stdout.write(`\n${renderCpuProfile(summariseCpuProfile(kept, 25, window), 'Server main thread during the searches')}\n\nProfile kept in ${kept}${window ? ` (searches from ${window.fromUs} to ${window.toUs} µs)` : ''}\n`);
      } else log('no .cpuprofile was written');
    }
    await rm(workRoot, { recursive: true, force: true });
  }
}

interface StudyUpdateFigures {
  instances: number;
  rounds: number;
  medianMs: number;
  readMs: number;
  prepareMs: number;
  applyMs: number;
  indexRowsTouched: number;
}

/**
 * What a STOW into a large study costs on the FHIR side: the ImagingStudy of an `instances`
 * study is rewritten with one more instance, `rounds` times, through the same writer the DICOM
 * ingest uses (lock and read, prepare = index rows, apply = SQL), each in its own transaction.
 * Index rows touched come from pg_stat_xact_user_tables inside the transaction.
 */
async function measureStudyUpdate(url: string, instances: number, rounds: number): Promise<StudyUpdateFigures> {
  const knex = knexFactory({ client: 'pg', connection: url, pool: { min: 0, max: 1 } });
  const defs = loadFhirDefinitions();
  const id = `bench-large-study-${Date.now().toString(36)}`;
  const study = (n: number) => ({
    resourceType: 'ImagingStudy' as const,
    id,
    status: 'available' as const,
    identifier: [{ system: 'urn:dicom:uid', value: `urn:oid:2.25.${Date.now()}` }],
    subject: { reference: 'Patient/bench' },
    numberOfInstances: n,
    series: [
      {
        uid: '2.25.1',
        modality: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: 'OPT' },
        instance: Array.from({ length: n }, (_, i) => ({ uid: `2.25.1.${i + 1}`, sopClass: { system: 'urn:ietf:rfc:3986', code: 'urn:oid:1.2.840.10008.5.1.4.1.1.77.1.5.4' }, number: i + 1 })),
      },
    ],
  });
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const ms = (a: bigint, b: bigint) => Number(b - a) / 1e6;
  try {
    await knex.transaction((trx) => applyWrites(trx, [prepareWrite(defs, study(instances), undefined, 'POST', new Date())]));
    const total: number[] = [];
    const read: number[] = [];
    const prepare: number[] = [];
    const apply: number[] = [];
    const touched: number[] = [];
    const tables = ['fhir_token', 'fhir_string', 'fhir_date', 'fhir_number', 'fhir_reference', 'fhir_uri'];
    // Index rows of the study, and how many of them this transaction wrote (xmin = our xid).
    const countRows = async (trx: typeof knex, rid: string) => {
      const r = await trx.raw(
        tables.map((t) => `SELECT count(*) AS n, count(*) FILTER (WHERE xmin = pg_current_xact_id()::xid) AS mine FROM ${t} WHERE rid = ?`).join(' UNION ALL '),
        tables.map(() => rid),
      );
      return r.rows.reduce((a: { n: number; mine: number }, x: { n: string; mine: string }) => ({ n: a.n + Number(x.n), mine: a.mine + Number(x.mine) }), { n: 0, mine: 0 });
    };
    for (let k = 1; k <= rounds; k++) {
      let counting = 0;
      const t0 = process.hrtime.bigint();
      await knex.transaction(async (trx) => {
        const existing = await readCurrent(trx, 'ImagingStudy', id, { forUpdate: true });
        const t1 = process.hrtime.bigint();
        const before = await countRows(trx, existing!.rid);
        const t2 = process.hrtime.bigint();
        const w = prepareWrite(defs, study(instances + k), existing, 'PUT', new Date());
        const t3 = process.hrtime.bigint();
        await applyWrites(trx, [w]);
        const t4 = process.hrtime.bigint();
        const after = await countRows(trx, existing!.rid);
        counting = ms(t1, t2) + ms(t4, process.hrtime.bigint());
        read.push(ms(t0, t1));
        prepare.push(ms(t2, t3));
        apply.push(ms(t3, t4));
        // inserted = rows this transaction wrote; deleted = rows that were there and are gone.
        touched.push(after.mine + (before.n + after.mine - after.n));
      });
      total.push(ms(t0, process.hrtime.bigint()) - counting);
    }
    return { instances, rounds, medianMs: median(total), readMs: median(read), prepareMs: median(prepare), applyMs: median(apply), indexRowsTouched: median(touched) };
  } finally {
    await knex.destroy();
  }
}

function renderStudyUpdate(f: StudyUpdateFigures): string {
  return [
    `### STOW into a large study (FHIR side): the ImagingStudy of a ${f.instances.toLocaleString('en-US')}-instance study rewritten with one more instance`,
    '',
    '| rounds | median ms (commit included) | lock + read ms | prepare (index rows) ms | apply SQL ms | index rows inserted + deleted |',
    '|---:|---:|---:|---:|---:|---:|',
    `| ${f.rounds} | ${f.medianMs.toFixed(1)} | ${f.readMs.toFixed(1)} | ${f.prepareMs.toFixed(1)} | ${f.applyMs.toFixed(1)} | ${f.indexRowsTouched} |`,
  ].join('\n');
}

async function readFacts(url: string, withSizes = true): Promise<{ counts: Record<string, number>; indexRows: number; databaseBytes: number; patientIds: string[] }> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    const counts: Record<string, number> = {};
    for (const r of (await c.query(`SELECT resource_type, count(*)::bigint AS n FROM fhir_resource WHERE NOT deleted GROUP BY 1 ORDER BY 2 DESC`)).rows) counts[r.resource_type] = Number(r.n);
    let indexRows = 0;
    if (withSizes) for (const t of ['fhir_token', 'fhir_string', 'fhir_date', 'fhir_number', 'fhir_reference', 'fhir_uri']) indexRows += Number((await c.query(`SELECT count(*)::bigint AS n FROM ${t}`)).rows[0].n);
    const databaseBytes = Number((await c.query('SELECT pg_database_size(current_database()) AS n')).rows[0].n);
    const patientIds = (await c.query(`SELECT id FROM fhir_resource TABLESAMPLE SYSTEM (5) WHERE resource_type = 'Patient' LIMIT 1000`)).rows.map((r) => r.id as string);
    return { counts, indexRows, databaseBytes, patientIds };
  } finally {
    await c.end();
  }
}

async function runQueries(baseUrl: string, authorization: string, patientIds: string[], quick: boolean, only?: string[], around?: (phase: 'before' | 'after') => Promise<void>) {
  const n = quick ? 100 : 300;
  const warmup = quick ? 10 : 20;
  const patientAt = (i: number) => patientIds[(i * 7919) % patientIds.length];
  const matchesOf = (b: { entry?: Array<{ search?: { mode?: string }; resource: Record<string, any> }> }) => (b.entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => e.resource);
  const specs: QuerySpec[] = [
    {
      name: 'ImagingStudy?patient=',
      url: (i) => `/fhir/ImagingStudy?patient=Patient/${patientAt(i)}`,
      check: (b) => {
        const m = matchesOf(b);
        return m.length === PER_PATIENT && m.every((r) => /^Patient\//.test(r.subject?.reference)) ? null : `expected ${PER_PATIENT} studies, got ${m.length}`;
      },
      targetP95Ms: SEARCH_TARGET_MS,
    },
    {
      name: 'ImagingStudy?modality=OPT&laterality=right',
      url: () => '/fhir/ImagingStudy?modality=OPT&laterality=right',
      check: (b) => {
        const m = matchesOf(b);
        const ok = m.every((r) => r.series?.some((s: any) => s.modality?.code === 'OPT' && s.laterality?.code === '24028007'));
        return m.length === 20 && ok ? null : `expected 20 right-eye OPT studies, got ${m.length} (${ok ? 'all right' : 'some wrong'})`;
      },
      targetP95Ms: SEARCH_TARGET_MS,
    },
    {
      name: 'Condition?code:below=H47.01',
      url: () => '/fhir/Condition?code:below=H47.01',
      check: (b) => {
        const m = matchesOf(b);
        const ok = m.every((r) => r.code?.coding?.some((c: any) => c.system === ICD10 && String(c.code).startsWith('H47.01')));
        return m.length === 20 && ok ? null : `expected 20 H47.01x conditions, got ${m.length} (${ok ? 'all H47.01x' : 'some not'})`;
      },
      targetP95Ms: SEARCH_TARGET_MS,
    },
    {
      name: 'Patient?_revinclude=Condition:patient (a page)',
      url: (i) => `/fhir/Patient?_revinclude=Condition:patient&_count=20&_offset=${(i % 50) * 20}`,
      check: (b) => {
        const patients = new Set(matchesOf(b).map((r) => `Patient/${r.id}`));
        const included = (b.entry ?? []).filter((e) => e.search?.mode === 'include').map((e) => e.resource);
        const ok = included.every((r) => r.resourceType === 'Condition' && patients.has(r.subject?.reference));
        return patients.size === 20 && included.length === 20 * PER_PATIENT && ok ? null : `expected 20 patients with ${20 * PER_PATIENT} conditions, got ${patients.size} / ${included.length}`;
      },
      targetP95Ms: SEARCH_TARGET_MS,
    },
    {
      name: 'ImagingStudy?patient=&_include=ImagingStudy:patient',
      url: (i) => `/fhir/ImagingStudy?patient=Patient/${patientAt(i + 1)}&_include=ImagingStudy:patient`,
      check: (b) => {
        const included = (b.entry ?? []).filter((e) => e.search?.mode === 'include');
        return matchesOf(b).length === PER_PATIENT && included.length === 1 ? null : `expected ${PER_PATIENT} studies and their patient`;
      },
    },
  ];
  const out = [];
  for (const spec of specs.filter((s) => !only || only.some((o) => s.name.startsWith(o)))) {
    await around?.('before');
    const result = await measureQuery(baseUrl, authorization, spec, n, warmup);
    await around?.('after');
    log(`${spec.name}: p50 ${result.p50.toFixed(1)} ms, p95 ${result.p95.toFixed(1)} ms, ${result.failures.length} failures`);
    out.push({ spec, result });
  }
  return out;
}

if (require.main === module) {
  runFhirBenchmark()
    .then((code) => process.exit(code))
    .catch((err) => {
      process.stderr.write(`bench/fhir.ts: ${(err as Error)?.stack ?? err}\n`);
      process.exit(1);
    });
}
