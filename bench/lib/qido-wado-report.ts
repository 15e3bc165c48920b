import type { DiskFloor } from './machine-floor';
import type { ReadCase } from './qido-wado-cases';
import type { ReadStats } from './read-client';
import { describeMachine, fmt, markdownTable } from './report';
import { quantile } from './stow-client';
import type { PhaseMeasurement } from './stow-types';

/** One case measured at one scale. */
export interface CaseResult {
  readCase: ReadCase;
  m: PhaseMeasurement & { stats: ReadStats };
}

/** The index at one scale and what was measured on it. */
export interface ScaleResult {
  requestedInstances: number;
  census: { patients: number; studies: number; series: number; instances: number; unfilled: number; tableBytes: number };
  loadSeconds: number;
  vacuumSeconds: number;
  cases: CaseResult[];
}

/** Everything a run produced. */
export interface ReadRun {
  quick: boolean;
  command: string;
  stamp: string;
  workRoot: string;
  loadAtStart: number[];
  postgres: { version: string; sharedBuffers: string; workMem: string };
  serverStartSeconds: number;
  serverIdleRssBytes: number;
  realStudiesMB: number;
  requests: number;
  warmup: number;
  diskFloor?: DiskFloor;
  scales: ScaleResult[];
  error?: string;
}

/** MB/s of a retrieve case: bytes over the summed time of its sequential requests. */
export function retrieveMBps(stats: ReadStats): number {
  const seconds = stats.latenciesMs.reduce((a, b) => a + b, 0) / 1000;
  return stats.bytes / 1e6 / seconds;
}

/** Whether a case met its target (undefined when it has none), failures counting as a miss. */
export function caseVerdict(r: CaseResult): boolean | undefined {
  const t = r.readCase.target;
  if (!t) return undefined;
  if (r.m.stats.failures > 0) return false;
  if (t.kind === 'p95-ms') return quantile(r.m.stats.latenciesMs, 0.95) < t.value;
  return retrieveMBps(r.m.stats) >= t.value;
}

function targetText(c: ReadCase): string {
  if (!c.target) return '–';
  return c.target.kind === 'p95-ms' ? `p95 < ${c.target.value} ms` : `>= ${c.target.value} MB/s`;
}

const scaleLabel = (s: ScaleResult) => `${fmt(s.census.instances, 0)} instances`;

/** The markdown section for bench/RESULTS.md and stdout. */
export function renderReadRun(run: ReadRun): string {
  const out: string[] = [];
  const last = run.scales[run.scales.length - 1];
  out.push(`## QIDO-RS / WADO-RS at scale, ${run.quick ? 'quick' : 'full'} run: PostgreSQL ${run.postgres.version} server, filesystem blob store`, '');
  out.push(`- Date: ${run.stamp}`, `- Command: \`${run.command}\``);
  out.push(...describeMachine(run.workRoot, run.loadAtStart));
  out.push(
    `- PostgreSQL: shared_buffers ${run.postgres.sharedBuffers}, work_mem ${run.postgres.workMem} (the machine's server, a fresh database, dropped afterwards)`,
    `- Server: \`node dist/main.js serve\` as a child process, LOG_LEVEL=warn, ready in ${fmt(run.serverStartSeconds, 2)} s, RSS when ready ${fmt(run.serverIdleRssBytes / 1e6, 0)} MB; every request carries an admin bearer token`,
    `- Real bytes: one CT study (64 instances), one MR study (4) and one OCT visit (2 OPT volumes of 61 x 496 x 768 + 2 OP images) stored through STOW-RS, ${fmt(run.realStudiesMB, 1)} MB; every other index row is a clone of one of them made with SQL (bench/lib/index-loader.ts)`,
    `- Requests: ${run.requests} timed per case after ${run.warmup} untimed, one at a time (concurrency 1) over one keep-alive connection; study retrieves ${last?.cases.find((c) => c.readCase.group === 'retrieve')?.m.stats.requests ?? '–'} per case`,
  );
  if (run.diskFloor) {
    const d = run.diskFloor;
    out.push(`- Machine floor, same disk: sequential read ${fmt(d.readMBps, 0)} MB/s (${d.readMethod}, ${fmt(d.bytes / 1e6, 0)} MB), write + fsync ${fmt(d.writeMBps, 0)} MB/s`);
  }
  out.push('', '### The index at each scale', '');
  out.push(
    markdownTable(
      ['scale', 'instances', 'series', 'studies', 'patients', 'index tables on disk', 'bulk load', 'VACUUM ANALYZE', 'QIDO columns unfilled'],
      run.scales.map((s) => [
        fmt(s.requestedInstances, 0),
        fmt(s.census.instances, 0),
        fmt(s.census.series, 0),
        fmt(s.census.studies, 0),
        fmt(s.census.patients, 0),
        `${fmt(s.census.tableBytes / 1e6, 0)} MB`,
        `${fmt(s.loadSeconds, 1)} s`,
        `${fmt(s.vacuumSeconds, 1)} s`,
        String(s.census.unfilled),
      ]),
      ['r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
  );
  for (const s of run.scales) {
    out.push('', `### At ${scaleLabel(s)}`, '', renderScale(s));
    for (const c of s.cases) {
      if (c.m.stats.failureSamples.length) out.push('', `Failures in ${c.readCase.id}:`, ...c.m.stats.failureSamples.map((f) => `- ${f}`));
    }
  }
  if (run.scales.length > 1) out.push('', '### Growth (p50 / p95 ms; retrieves MB/s)', '', renderGrowth(run.scales));
  if (last) {
    const verdicts = last.cases.map(caseVerdict).filter((v) => v !== undefined);
    out.push(
      '',
      `Targets at ${scaleLabel(last)}: ${verdicts.filter(Boolean).length} of ${verdicts.length} pass` +
        (last.census.instances < 900_000 ? ' (the targets are set at 1,000,000 instances: indicative only)' : '') +
        '.',
    );
  }
  if (run.error) out.push('', 'The run stopped early:', '', '```', run.error.slice(0, 4000), '```');
  out.push(
    '',
    '"items" = mean results per answer (studies, series, instances or frames); "KB" = mean answer body; "server / db CPU" = CPU time per request of the server process (all threads) and of the PostgreSQL backends serving it; "busy" = share of all CPUs busy on the machine during the case, whoever used them.',
  );
  return out.join('\n');
}

function renderScale(s: ScaleResult): string {
  const rows = s.cases.map((c) => {
    const st = c.m.stats;
    const n = st.latenciesMs.length || 1;
    const perReq = (sec: number | undefined) => (sec === undefined ? '–' : fmt((sec * 1000) / n, 2));
    const verdict = caseVerdict(c);
    const figure =
      c.readCase.group === 'retrieve'
        ? `${fmt(retrieveMBps(st), 0)} MB/s`
        : `${fmt(quantile(st.latenciesMs, 0.5), 1)} / ${fmt(quantile(st.latenciesMs, 0.95), 1)} / ${fmt(quantile(st.latenciesMs, 0.99), 1)}`;
    return [
      c.readCase.title,
      String(st.requests),
      figure,
      fmt(st.items / n, 1),
      fmt(st.bytes / n / 1e3, 1),
      `${perReq(c.m.serverCpuSeconds)} / ${perReq(c.m.dbCpuSeconds)}`,
      `${fmt(c.m.machineBusy * 100, 0)}%`,
      fmt(c.m.peakRssBytes / 1e6, 0),
      String(st.failures),
      targetText(c.readCase),
      verdict === undefined ? (st.failures ? 'FAIL' : 'ok') : verdict ? 'PASS' : 'FAIL',
    ];
  });
  return markdownTable(
    ['request', 'n', 'p50 / p95 / p99 ms (or MB/s)', 'items', 'KB', 'server / db CPU ms/req', 'busy', 'server peak RSS MB', 'failures', 'target', 'result'],
    rows,
    ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l', 'l'],
  );
}

function renderGrowth(scales: ScaleResult[]): string {
  const ids = scales[0]!.cases.map((c) => c.readCase);
  const rows = ids.map((rc) => [
    rc.title,
    ...scales.map((s) => {
      const c = s.cases.find((x) => x.readCase.id === rc.id);
      if (!c) return '–';
      const st = c.m.stats;
      return rc.group === 'retrieve' ? fmt(retrieveMBps(st), 0) : `${fmt(quantile(st.latenciesMs, 0.5), 1)} / ${fmt(quantile(st.latenciesMs, 0.95), 1)}`;
    }),
  ]);
  return markdownTable(['request', ...scales.map(scaleLabel)], rows, ['l', ...scales.map(() => 'r' as const)]);
}
