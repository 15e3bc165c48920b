import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { measureFloors } from './lib/floors';
import { updateResultsFile } from './lib/report';
import { staleBuildWarning } from './lib/server-process';
import { renderVariant } from './lib/stow-report';
import { FULL_SIZES, QUICK_SIZES, type DbKind, type PhaseGroup, type StoreKind, type StowOptions, type VariantResult } from './lib/stow-types';
import { runVariant } from './lib/stow-variant';
import { benchCli } from './lib/cli';

/**
 * STOW-RS throughput benchmark (bench/README.md). Starts the built server
 * (`node dist/main.js serve`) as a child process on a fresh DATA_DIR and a free port, stores
 * (a) small CT slices one and fifty per request at concurrency 1 and 8, (b) 23 MB ophthalmic
 * tomography volumes, (c) one very large streamed instance, checks that every instance was
 * stored, and prints the figures next to this machine's floor and the project's targets.
 *
 *   npx tsx bench/stow.ts [--quick] [--db embedded|postgres|both] [--store fs|s3] [--write]
 *                         [--cpu-prof] [--node-flags=FLAGS] [--phases a,b,c] [--keep] [--admin-url URL] [--series-size N]
 *                         [--rows x1c1,x1c8,x50c1,x50c8]
 *
 * Exit status: 0 all targets met, 3 only performance targets missed, 1 a request failed or a
 * stored count did not match, 2 bad arguments.
 */

const REPO_ROOT = path.resolve(__dirname, '..');
const RESULTS_FILE = path.join(__dirname, 'RESULTS.md');
const USAGE =
  'usage: npx tsx bench/stow.ts [--quick] [--db embedded|postgres|both] [--store fs|s3] [--write]\n' +
  '                            [--cpu-prof] [--node-flags=FLAGS] [--phases a,b,c] [--keep] [--admin-url URL] [--series-size N]\n' +
  '                            [--rows x1c1,x1c8,x50c1,x50c8]\n';
const cli = benchCli('bench/stow.ts', USAGE);
const usage = cli.usage;

/** Parses the command line; exits with status 2 and a message on anything invalid. */
export function parseStowOptions(argv: string[]): StowOptions {
  const values = cli.parse(argv, {
    quick: { type: 'boolean', default: false },
    db: { type: 'string', default: 'embedded' },
    store: { type: 'string', default: 'fs' },
    write: { type: 'boolean', default: false },
    'cpu-prof': { type: 'boolean', default: false },
    'node-flags': { type: 'string', default: '' },
    phases: { type: 'string', default: 'a,b,c' },
    keep: { type: 'boolean', default: false },
    'admin-url': { type: 'string', default: 'postgres://postgres@127.0.0.1:5432/postgres' },
    'series-size': { type: 'string', default: '100' },
    rows: { type: 'string', default: '' },
  });
  const db = String(values.db);
  if (db !== 'embedded' && db !== 'postgres' && db !== 'both') usage(`--db must be embedded, postgres or both, not ${db}`);
  const store = String(values.store);
  if (store !== 'fs' && store !== 's3') usage(`--store must be fs or s3, not ${store}`);
  const phases = new Set(String(values.phases).split(',').map((p) => p.trim()));
  for (const p of phases) if (p !== 'a' && p !== 'b' && p !== 'c') usage(`--phases takes a comma list of a, b, c; not "${p}"`);
  const seriesSize = Number(values['series-size']);
  if (!Number.isInteger(seriesSize) || seriesSize < 1) usage('--series-size must be a positive integer');
  return {
    quick: Boolean(values.quick),
    dbs: db === 'both' ? ['embedded', 'postgres'] : [db as DbKind],
    store: store as StoreKind,
    write: Boolean(values.write),
    cpuProf: Boolean(values['cpu-prof']),
    nodeFlags: String(values['node-flags']).split(/\s+/).filter(Boolean),
    phases: phases as Set<PhaseGroup>,
    keep: Boolean(values.keep),
    adminUrl: String(values['admin-url']),
    seriesSize,
    rows: parseRows(String(values.rows)),
  };
}

/** `--rows x1c8,x50c8`: the phase a rows to run, as their ids without the phase ('x1 c8'). */
function parseRows(text: string): string[] {
  const rows = text.split(',').map((r) => r.trim()).filter(Boolean);
  for (const r of rows) if (!/^x(1|50)c(1|8)$/.test(r)) usage(`--rows takes a comma list of x1c1, x1c8, x50c1, x50c8; not "${r}"`);
  return rows.map((r) => r.replace('c', ' c'));
}

const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);

/** Runs the benchmark with the process's arguments; resolves with the exit status. */
export async function runStowBenchmark(argv: string[] = process.argv.slice(2)): Promise<number> {
  const options = parseStowOptions(argv);
  const sizes = options.quick ? QUICK_SIZES : FULL_SIZES;
  const command = ['npx tsx bench/stow.ts', ...argv].join(' ');
  const loadAtStart = os.loadavg();
  const stale = staleBuildWarning(REPO_ROOT);
  if (stale) log(`warning: ${stale}`);
  const workRoot = await mkdtemp(path.join(os.tmpdir(), 'imaging-lake-bench-'));
  log(`work directory ${workRoot}`);
  try {
    const floors = await measureFloors(options, sizes, workRoot, log);
    const variants: VariantResult[] = [];
    for (const db of options.dbs) variants.push(await runVariant(options, sizes, db, REPO_ROOT, workRoot, floors, log));
    const stamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    let exitCode = 0;
    for (const v of variants) {
      const section = renderVariant(v, options, sizes, floors, { command, stamp, workRoot, loadAtStart });
      process.stdout.write(`${section}\n\n`);
      if (options.write) {
        const key = `${options.quick ? 'quick' : 'full'}-${v.db}-${v.store}${options.cpuProf ? '-prof' : ''}`;
        updateResultsFile(RESULTS_FILE, key, section);
        log(`updated ${path.relative(REPO_ROOT, RESULTS_FILE)} section ${key}`);
      }
      if (v.error || v.phases.some((p) => !p.check.ok)) exitCode = 1;
      else if (exitCode === 0 && v.phases.some((p) => p.target && !p.target.pass)) exitCode = 3;
    }
    return exitCode;
  } finally {
    if (options.keep) log(`kept ${workRoot}`);
    else await rm(workRoot, { recursive: true, force: true });
  }
}

if (require.main === module) {
  runStowBenchmark()
    .then((code) => process.exit(code))
    .catch((err) => {
      process.stderr.write(`bench/stow.ts: ${(err as Error)?.stack ?? err}\n`);
      process.exit(1);
    });
}
