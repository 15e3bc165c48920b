import { advantage, figureFailures, figureValue, type Figure } from './compare-figures';
import { IL, ORTHANC, type CompareFloors, type CompareSizes, type CompareVariant } from './compare-variant';
import { describeMachine, fmt, markdownTable } from './report';

/** What a whole comparison run knows about itself. */
export interface CompareRun {
  quick: boolean;
  command: string;
  stamp: string;
  workRoot: string;
  loadAtStart: number[];
  sizes: CompareSizes;
  floors: CompareFloors;
}

const digits = (f: Figure) => (f.unit === 'ms' ? 1 : 0);

/** Why a figure has no value for `server` (skipped for both, or not measurable on it), or undefined when it has one. */
export function notMeasured(f: Figure, server: string): string | undefined {
  return f.skipped ?? f.unmeasured?.[server];
}

/**
 * Whether a target row passes: imaging-lake had no failed request and the target's own test on
 * the medians holds (Orthanc's failures only lower its own figures). Undefined when there is no
 * target, or nothing to judge it on: a skipped figure, or a peer that could not be measured
 * (its failure is reported, never counted against imaging-lake). imaging-lake not measured fails.
 */
export function targetPasses(f: Figure): boolean | undefined {
  if (!f.target || f.skipped) return undefined;
  if (notMeasured(f, IL)) return false;
  // A target that compares with the peer takes both values; one against the machine's floor takes only imaging-lake's.
  if (notMeasured(f, ORTHANC) && f.target.pass.length > 1) return undefined;
  return figureFailures(f, IL) === 0 && f.target.pass(figureValue(f, IL), figureValue(f, ORTHANC));
}

/** True when imaging-lake itself failed in this figure: a failed request, or no value where one was due. */
export function imagingLakeFailed(f: Figure): boolean {
  return figureFailures(f, IL) > 0 || (!f.skipped && notMeasured(f, IL) !== undefined);
}

/** The markdown section of one pairing (what --write stores). */
export function renderComparison(v: CompareVariant, run: CompareRun): string {
  const out: string[] = [];
  out.push(`## imaging-lake vs Orthanc, ${run.quick ? 'quick' : 'full'} run: ${v.db === 'postgres' ? 'both on the PostgreSQL server' : 'embedded databases (PGlite vs SQLite)'}`, '');
  out.push(`- Date: ${run.stamp}`, `- Command: \`${run.command}\``);
  out.push(...describeMachine(run.workRoot, run.loadAtStart));
  for (const name of [IL, ORTHANC]) {
    const s = v.startup[name];
    out.push(`- ${name}: ${v.labels[name]}${s ? `; ready in ${fmt(s.seconds, 2)} s, RSS when ready ${fmt(s.rssBytes / 1e6, 0)} MB` : ''}`);
  }
  out.push(
    '- Method: both servers run at once on loopback, each idle while the other is measured (except the growth of the QIDO population beyond the first scale, which both take at once); the same request bodies go to both; ' +
      `every figure is measured ${run.sizes.reps} times, alternating which server goes first, and the table shows medians. ` +
      'imaging-lake requests carry an admin bearer token; Orthanc has authentication off. Both fsync stored files before answering.',
  );
  if (v.orthancConfig) {
    const c = v.orthancConfig;
    const keys = ['KeepAlive', 'TcpNoDelay', 'SaveJobs', 'StorageAccessOnFind', 'HttpCompressionEnabled', 'StorageCompression', 'SyncStorageArea'];
    out.push(`- Orthanc settings beyond the defaults' paths and ports: ${keys.map((k) => `${k}=${JSON.stringify(c[k])}`).join(', ')}${c.PostgreSQL ? ', PostgreSQL index with IndexConnectionsCount=5' : ''} (the Orthanc Book's "Scalability of Orthanc" recommendations)`);
  }
  if (v.seconds !== undefined) out.push(`- Run length: ${fmt(v.seconds / 60, 0)} min for this pairing (start-up, population, every figure, shut-down)`);
  out.push('', '### Machine floor (same run, same disk)', '');
  out.push(
    markdownTable(
      ['floor', 'rate'],
      [
        ['sequential write + fsync of the volume bytes, 1 MiB chunks', `${fmt(run.floors.diskWriteMBps, 0)} MB/s`],
        ['sequential read of the same bytes (O_DIRECT)', `${fmt(run.floors.diskReadMBps, 0)} MB/s`],
        ['~34 kB files, each write + fsync + directory fsync, one writer', `${fmt(run.floors.smallFilesPerSecond, 0)} files/s`],
        ['SHA-256, one core', `${fmt(run.floors.sha256MBps, 0)} MB/s`],
        ...(run.floors.httpUploadMBps === undefined ? [] : [['loopback HTTP upload of the volume bodies to a discarding process, concurrency 1', `${fmt(run.floors.httpUploadMBps, 0)} MB/s`]]),
      ],
      ['l', 'r'],
    ),
  );
  out.push('', `### Results (medians of ${run.sizes.reps})`, '', renderMain(v));
  const notes = v.figures.filter((f) => f.note);
  if (notes.length) out.push('', ...notes.map((f) => `- ${f.title}: ${f.note}.`));
  const skipped = v.figures.filter((f) => f.skipped && f.id.includes('-p50'));
  if (skipped.length) out.push('', ...skipped.map((f) => `- ${f.title.replace(/ p50 /, ' ')}: not measured: ${f.skipped}.`));
  if (v.stored) {
    out.push(
      '',
      'Stored at the end (instances): ' +
        Object.entries(v.stored)
          .map(([name, c]) => `${name} sent ${fmt(c.sent, 0)}, acknowledged ${fmt(c.acknowledged, 0)}${c.resent ? ` (population requests not fully acknowledged, sent again off the clock: ${fmt(c.resent, 0)}, complete after that: ${fmt(c.repaired ?? 0, 0)})` : ''}, found ${c.found === undefined ? '?' : fmt(c.found, 0)} (${c.how})`)
          .join('; ') +
        '.',
    );
  }
  const targeted = v.figures.filter((f) => f.target);
  const passed = targeted.filter((f) => targetPasses(f)).length;
  const unjudged = targeted.filter((f) => targetPasses(f) === undefined).length;
  out.push('', `Targets: ${passed} of ${targeted.length} pass${unjudged ? ` (${unjudged} not judged: the peer could not be measured)` : ''}${run.quick ? ' (quick run: reduced counts, indicative only)' : ''}.`);
  out.push('', '### Reading', '', ...renderReading(v));
  out.push('', '### Every repetition, and server CPU', '', renderDetails(v));
  out.push('', '### Peak RSS per phase (MB)', '', renderRss(v));
  for (const f of v.figures) {
    for (const [name, list] of Object.entries(f.samples)) {
      const samples = list.flatMap((s) => s.m.stats.failureSamples);
      if (samples.length) out.push('', `Failures in ${f.id} on ${name}:`, ...samples.slice(0, 5).map((x) => `- ${x}`));
    }
  }
  for (const p of v.problems ?? []) out.push('', 'A part of the run stopped with an error (the parts after it still ran):', '', '```', p.slice(0, 4000), '```');
  if (v.error) out.push('', 'The run stopped early:', '', '```', v.error.slice(0, 4000), '```');
  out.push(
    '',
    `Counts: STOW rows ${run.sizes.small} CT slices each (series of 100), ${run.sizes.volumes} OPT volumes per repetition, after one untimed STOW of each kind (a CT slice, a volume) to each server; latency figures ${run.sizes.requests} timed requests per repetition (single frames ${run.sizes.frameRequests}) after ${run.sizes.warmup} untimed, one at a time; ` +
      `study retrieves ${run.sizes.retrieves} per repetition. "advantage" = how many times better imaging-lake is (throughput ratio, or the inverse latency ratio): above 1 imaging-lake wins. ` +
      'Server CPU = CPU time of the server process (all threads) per instance, MB or request; with PostgreSQL the database backends serving it come after the slash.',
  );
  return out.join('\n');
}

/** A figure's median on one server with its unit, or why there is none. */
function valueCell(f: Figure, server: string): string {
  if (notMeasured(f, server)) return 'not measured';
  return `${fmt(figureValue(f, server), digits(f))} ${f.unit}`;
}

/** The result column: the verdict, then each server's failed requests or why it was not measured. */
export function resultCell(f: Figure): string {
  const pass = targetPasses(f);
  const verdict = pass === undefined ? (f.target && !f.skipped ? 'not judged' : '') : pass ? 'PASS' : 'FAIL';
  const why = f.skipped ? [`not measured: ${f.skipped.split(';')[0]} (see below)`] : Object.entries(f.unmeasured ?? {}).map(([n, reason]) => `${n} not measured: ${reason}`);
  const failed = [IL, ORTHANC].filter((n) => figureFailures(f, n)).map((n) => `${n}: ${figureFailures(f, n)} failed requests`);
  return [verdict, ...failed, ...why].filter(Boolean).join('; ');
}

function renderMain(v: CompareVariant): string {
  const rows = v.figures.map((f) => {
    const a = advantage(f, IL, ORTHANC);
    return [f.title, valueCell(f, IL), valueCell(f, ORTHANC), `${fmt(a, a < 10 ? 2 : 1)}x`, f.target?.text ?? '–', resultCell(f)];
  });
  return markdownTable(['figure', 'imaging-lake', 'Orthanc', 'imaging-lake advantage', 'target', 'result'], rows, ['l', 'r', 'r', 'r', 'l', 'l']);
}

function renderReading(v: CompareVariant): string[] {
  const rated = v.figures.filter((f) => Number.isFinite(advantage(f, IL, ORTHANC)) && f.id !== 'load' && f.id !== 'growth');
  const wins = rated.filter((f) => advantage(f, IL, ORTHANC) >= 1.1).sort((a, b) => advantage(b, IL, ORTHANC) - advantage(a, IL, ORTHANC));
  const even = rated.filter((f) => advantage(f, IL, ORTHANC) < 1.1 && advantage(f, IL, ORTHANC) > 1 / 1.1);
  const losses = rated.filter((f) => advantage(f, IL, ORTHANC) <= 1 / 1.1).sort((a, b) => advantage(a, IL, ORTHANC) - advantage(b, IL, ORTHANC));
  const list = (fs: Figure[]) => fs.map((f) => `${f.title} (${fmt(advantage(f, IL, ORTHANC), 2)}x)`).join('; ') || 'none';
  return [
    `- imaging-lake ahead by 10% or more: ${list(wins)}.`,
    `- Within 10%: ${list(even)}.`,
    `- Orthanc ahead by 10% or more: ${list(losses)}.`,
    '- Why, from the CPU figures below and profiles: see the hand-written notes after the run sections in this file.',
  ];
}

function renderDetails(v: CompareVariant): string {
  const rows = v.figures.map((f) => {
    const cell = (name: string) => (notMeasured(f, name) ? 'not measured' : (f.samples[name] ?? []).map((s) => fmt(s.value, digits(f))).join(', '));
    const cpu = (name: string) => {
      const list = f.samples[name] ?? [];
      if (list.length === 0) return '–';
      const units = list.reduce((n, s) => n + s.units, 0);
      const server = list.reduce((n, s) => n + s.m.serverCpuSeconds, 0);
      const db = list.reduce((n, s) => n + (s.m.dbCpuSeconds ?? 0), 0);
      const hasDb = list.some((s) => s.m.dbCpuSeconds !== undefined);
      return `${fmt((server * 1000) / units, 2)}${hasDb ? ` / ${fmt((db * 1000) / units, 2)}` : ''} ms/${f.cpuPer}`;
    };
    const busy = (name: string) => (f.samples[name]?.length ? `${fmt(((f.samples[name] ?? []).reduce((n, s) => n + s.m.machineBusy, 0) / Math.max(1, f.samples[name]?.length ?? 0)) * 100, 0)}%` : '–');
    return [f.title, cell(IL), cell(ORTHANC), cpu(IL), cpu(ORTHANC), `${busy(IL)} / ${busy(ORTHANC)}`];
  });
  return markdownTable(['figure', 'imaging-lake, each run', 'Orthanc, each run', 'imaging-lake CPU', 'Orthanc CPU', 'machine busy'], rows, ['l', 'r', 'r', 'r', 'r', 'r']);
}

function renderRss(v: CompareVariant): string {
  const phases = [...new Set(v.figures.map((f) => f.phase))];
  const rows = phases.map((phase) => {
    const peak = (name: string) =>
      Math.max(
        0,
        ...v.figures.filter((f) => f.phase === phase).flatMap((f) => (f.samples[name] ?? []).map((s) => s.m.peakRssBytes)),
      );
    return [phase, fmt(peak(IL) / 1e6, 0), fmt(peak(ORTHANC) / 1e6, 0)];
  });
  return markdownTable(['phase', 'imaging-lake', 'Orthanc'], rows, ['l', 'r', 'r']);
}
