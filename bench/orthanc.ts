import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { imagingLakeFailed, renderComparison, targetPasses, type CompareRun } from './lib/compare-report';
import { COMPARE_FULL, COMPARE_QUICK, runCompareVariant, type CompareFloors, type CompareVariant } from './lib/compare-variant';
import { measureBufferedUpload, withHttpSink } from './lib/http-sink';
import { createCtSlices, createOctVolumes } from './lib/instances';
import { measureDiskFloor, measureSha256, measureSmallFileFloor } from './lib/machine-floor';
import { findOrthanc, ORTHANC_INSTALL_HINT } from './lib/orthanc-process';
import { updateResultsFile } from './lib/report';
import { staleBuildWarning } from './lib/server-process';
import { benchCli } from './lib/cli';

/**
 * imaging-lake side by side with Orthanc and its DICOMweb plugin (bench/README.md): one
 * command starts both on loopback, sends both the same data, and prints figure, imaging-lake,
 * Orthanc and the ratio, medians of three interleaved repetitions, next to this machine's floor.
 *
 *   npx tsx bench/orthanc.ts [--quick] [--db embedded|postgres|both] [--qido-scales 10000,100000] [--qido-matrix 32] [--load-budget MIN] [--il-env K=V]... [--write] [--keep] [--admin-url URL]
 *
 * Exit status: 0 all targets met, 3 only performance targets missed, 1 a request failed,
 * 2 bad arguments, 4 Orthanc is not installed (the message says how to install it).
 */

const REPO_ROOT = path.resolve(__dirname, '..');
const RESULTS_FILE = path.join(__dirname, 'RESULTS.md');
const USAGE =
  'usage: npx tsx bench/orthanc.ts [--quick] [--db embedded|postgres|both] [--qido-scales N,N] [--qido-matrix N] [--load-budget MIN] [--il-env K=V]... [--reps N] [--write] [--keep] [--admin-url URL]\n';
const cli = benchCli('bench/orthanc.ts', USAGE);
const usage = cli.usage;

interface CompareOptions {
  quick: boolean;
  dbs: Array<'embedded' | 'postgres'>;
  qidoScales?: number[];
  qidoMatrix?: number;
  loadBudgetMinutes?: number;
  /** `--il-env K=V`: settings of imaging-lake's server beyond the defaults (named in the report). */
  ilSettings: Record<string, string>;
  reps?: number;
  write: boolean;
  keep: boolean;
  adminUrl: string;
}

/** Parses the command line; exits with status 2 and a message on anything invalid. */
export function parseCompareOptions(argv: string[]): CompareOptions {
  const values = cli.parse(argv, {
    quick: { type: 'boolean', default: false },
    db: { type: 'string', default: 'embedded' },
    'qido-scales': { type: 'string' },
    'qido-matrix': { type: 'string' },
    'load-budget': { type: 'string' },
    'il-env': { type: 'string', multiple: true },
    reps: { type: 'string' },
    write: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    'admin-url': { type: 'string', default: 'postgres://postgres@127.0.0.1:5432/postgres' },
  });
  const db = String(values.db);
  if (db !== 'embedded' && db !== 'postgres' && db !== 'both') usage(`--db must be embedded, postgres or both, not ${db}`);
  let qidoScales: number[] | undefined;
  if (values['qido-scales']) {
    qidoScales = String(values['qido-scales']).split(',').map((s) => Number(s.trim().replace(/_/g, '')));
    if (qidoScales.some((s) => !Number.isInteger(s) || s < 1000)) usage('--qido-scales takes a comma list of instance counts, each at least 1000');
    qidoScales.sort((a, b) => a - b);
  }
  const qidoMatrix = values['qido-matrix'] === undefined ? undefined : Number(values['qido-matrix']);
  if (qidoMatrix !== undefined && (!Number.isInteger(qidoMatrix) || qidoMatrix < 8 || qidoMatrix > 1024)) usage('--qido-matrix takes the slices\' rows (= columns), 8 to 1024');
  const loadBudgetMinutes = values['load-budget'] === undefined ? undefined : Number(values['load-budget']);
  if (loadBudgetMinutes !== undefined && !(loadBudgetMinutes >= 0)) usage('--load-budget takes minutes, 0 or more');
  const reps = values.reps === undefined ? undefined : Number(values.reps);
  if (reps !== undefined && (!Number.isInteger(reps) || reps < 1)) usage('--reps must be a positive integer');
  const ilSettings: Record<string, string> = {};
  for (const pair of (values['il-env'] as string[] | undefined) ?? []) {
    const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(pair);
    if (!m) usage(`--il-env takes NAME=value (an environment setting of imaging-lake's server), not "${pair}"`);
    ilSettings[m![1]!] = m![2]!;
  }
  return {
    quick: Boolean(values.quick),
    dbs: db === 'both' ? ['embedded', 'postgres'] : [db as 'embedded' | 'postgres'],
    qidoScales,
    qidoMatrix,
    loadBudgetMinutes,
    ilSettings,
    reps,
    write: Boolean(values.write),
    keep: Boolean(values.keep),
    adminUrl: String(values['admin-url']),
  };
}


const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);

/** Runs the comparison with the given arguments; resolves with the exit status. */
export async function runOrthancComparison(argv: string[] = process.argv.slice(2)): Promise<number> {
  const options = parseCompareOptions(argv);
  const install = findOrthanc(options.dbs.includes('postgres'));
  if ('missing' in install) {
    process.stderr.write(
      `bench/orthanc.ts: Orthanc is not installed (missing: ${install.missing.join('; ')}).\n` +
        `Install it from Debian with:\n\n  ${ORTHANC_INSTALL_HINT}\n\n` +
        'The benchmark never installs anything itself. It runs Orthanc from its own configuration on a free loopback port, ' +
        'so a system service the package may have started is neither used nor disturbed.\n',
    );
    return 4;
  }
  const sizes = { ...(options.quick ? COMPARE_QUICK : COMPARE_FULL) };
  if (options.qidoScales) sizes.qidoScales = options.qidoScales;
  if (options.qidoMatrix) sizes.qidoMatrix = options.qidoMatrix;
  if (options.loadBudgetMinutes !== undefined) sizes.loadBudgetSeconds = options.loadBudgetMinutes * 60;
  if (options.reps) sizes.reps = options.reps;
  const loadAtStart = os.loadavg();
  const stale = staleBuildWarning(REPO_ROOT);
  if (stale) log(`warning: ${stale}`);
  log(`${install.version} with DICOMweb ${install.dicomWebVersion} (${install.dicomWebPlugin})`);
  const workRoot = await mkdtemp(path.join(os.tmpdir(), 'imaging-lake-bench-orthanc-'));
  log(`work directory ${workRoot}`);
  const run: CompareRun = {
    quick: options.quick,
    command: ['npx tsx bench/orthanc.ts', ...argv].join(' '),
    stamp: '',
    workRoot,
    loadAtStart,
    sizes,
    floors: await measureCompareFloors(workRoot, sizes.volumes, sizes.small, options.quick),
  };
  const variants: CompareVariant[] = [];
  let exitCode = 0;
  try {
    for (const db of options.dbs) {
      variants.push(await runCompareVariant(db, { sizes, adminUrl: options.adminUrl, keep: options.keep, repoRoot: REPO_ROOT, workRoot, install, floors: run.floors, ilSettings: options.ilSettings }, log));
    }
    run.stamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    for (const v of variants) {
      // Rendered before the work directory goes: the machine description names its disk.
      const section = renderComparison(v, run);
      process.stdout.write(`${section}\n\n`);
      if (options.write) {
        const key = `orthanc-${options.quick ? 'quick' : 'full'}-${v.db}`;
        updateResultsFile(RESULTS_FILE, key, section);
        log(`updated ${path.relative(REPO_ROOT, RESULTS_FILE)} section ${key}`);
      }
      // Orthanc's failed requests and unmeasurable figures are reported in its column; only imaging-lake's fail the run.
      if (v.error || v.problems?.length || v.figures.some(imagingLakeFailed)) exitCode = 1;
      else if (exitCode === 0 && v.figures.some((f) => targetPasses(f) === false)) exitCode = 3;
    }
  } finally {
    if (options.keep) log(`kept ${workRoot}`);
    else await rm(workRoot, { recursive: true, force: true });
  }
  return exitCode;
}

/**
 * The floor the targets refer to: disk write + fsync and O_DIRECT read of the volume bytes,
 * fsynced small files, SHA-256; and the load generator's own ceiling for the volume row, the
 * same volume bodies sent one at a time over loopback HTTP to a process that discards them.
 */
async function measureCompareFloors(dir: string, volumes: number, small: number, quick: boolean): Promise<CompareFloors> {
  log('measuring the machine floor');
  const volumeBytes = createOctVolumes(1, 'probe')[0]!.length;
  const sliceBytes = createCtSlices(1, 1, 'probe')[0]!.length;
  const disk = await measureDiskFloor(dir, volumeBytes * Math.max(volumes, 2));
  const files = await measureSmallFileFloor(dir, Math.min(small, 500), sliceBytes);
  const sha = await measureSha256(quick ? 256 * 1024 ** 2 : 1024 ** 3);
  const httpUploadMBps = await withHttpSink((sink) => measureBufferedUpload(sink, Math.max(volumes, 2), volumeBytes));
  return { diskWriteMBps: disk.writeMBps, diskReadMBps: disk.readMBps, sha256MBps: sha.MBps, smallFilesPerSecond: files.filesPerSecond, httpUploadMBps };
}

if (require.main === module) {
  runOrthancComparison()
    .then((code) => process.exit(code))
    .catch((err) => {
      process.stderr.write(`bench/orthanc.ts: ${(err as Error)?.stack ?? err}\n`);
      process.exit(1);
    });
}
