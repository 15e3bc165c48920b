import { describeMachine, fmt, markdownTable } from './report';
import { quantile } from './stow-client';
import type { Floors, PhaseResult, StowOptions, StowSizes, VariantResult } from './stow-types';

/** Renders one variant's run as a self-contained markdown section (also what --write stores). */
export function renderVariant(
  v: VariantResult,
  o: StowOptions,
  sizes: StowSizes,
  floors: Floors,
  run: { command: string; stamp: string; workRoot: string; loadAtStart: number[] },
): string {
  const dbName = v.db === 'postgres' ? `PostgreSQL ${v.postgresVersion ?? ''} server` : 'embedded PostgreSQL (PGlite)';
  const out: string[] = [];
  out.push(`## STOW-RS, ${o.quick ? 'quick' : 'full'} run: ${dbName}, ${v.store === 'fs' ? 'filesystem' : 'S3 (s3rver)'} blob store`);
  out.push('');
  out.push(`- Date: ${run.stamp}`);
  out.push(`- Command: \`${run.command}\`${o.cpuProf ? ' (CPU profiler on: figures are a little lower than without)' : ''}`);
  out.push(...describeMachine(run.workRoot, run.loadAtStart));
  out.push(
    `- Server: \`node dist/main.js serve\` as a child process, LOG_LEVEL=warn, ready in ${fmt(v.startSeconds, 2)} s, RSS when ready ${fmt(v.idleRssBytes / 1e6, 0)} MB`,
  );
  out.push('', '### Machine floor (same run, same disk)', '', renderFloors(floors), '', '### Results', '');
  out.push(renderPhases(v.phases));
  out.push('');
  const targeted = v.phases.filter((p) => p.target);
  out.push(`Targets: ${targeted.filter((p) => p.target!.pass).length} of ${targeted.length} pass${o.quick ? ' (quick run: reduced counts, indicative only)' : ''}.`);
  for (const p of v.phases) {
    if (p.stats.failureSamples.length) out.push('', `Failures in ${p.id}:`, ...p.stats.failureSamples.map((s) => `- ${s}`));
  }
  if (v.error) out.push('', 'The run stopped early:', '', '```', v.error.slice(0, 4000), '```');
  out.push('');
  out.push(
    `Counts: a = ${sizes.small} CT slices per row (series of ${o.seriesSize}), b = ${sizes.volumes} volumes per row, ` +
      `c = one ${fmt(sizes.largeBytes / 2 ** 20, 0)} MiB pixel payload. MB = 10^6 bytes of DICOM (multipart framing not counted). ` +
      '"cores" = CPU seconds per wall second of the server process, the PostgreSQL backends serving it (– for the embedded engine, which runs inside the server), ' +
      'and the load generator; "busy" = share of all CPUs busy on the machine, whoever used them. "server CPU" = server CPU time (all threads) per instance (a) or per MB (b, c), with the share spent in the kernel (system calls) and the share of the main thread (JavaScript; the rest is the libuv pool, GC and compiler threads). ' +
      '"vs floor": a = inst/s divided by fsynced small files/s; b, c = MB/s divided by the slowest of disk write + fsync, SHA-256 and loopback HTTP upload.',
  );
  if (v.profile) out.push('', v.profile);
  return out.join('\n');
}

function renderFloors(floors: Floors): string {
  const rows: string[][] = [];
  for (const g of ['a', 'b', 'c'] as const) {
    const d = floors.disk[g];
    if (!d) continue;
    rows.push([`sequential write + fsync, ${fmt(d.bytes / 1e6, 0)} MB (phase ${g})`, `${fmt(d.writeMBps, 0)} MB/s`]);
    rows.push([`sequential read, ${fmt(d.bytes / 1e6, 0)} MB (phase ${g}, ${d.readMethod})`, `${fmt(d.readMBps, 0)} MB/s`]);
  }
  if (floors.smallFiles) {
    const s = floors.smallFiles;
    rows.push([`${s.files} files of ${fmt(s.fileBytes / 1e3, 1)} kB, each write + fsync + directory fsync, one writer`, `${fmt(s.filesPerSecond, 0)} files/s`]);
  }
  rows.push(['SHA-256, one core', `${fmt(floors.sha256MBps, 0)} MB/s`]);
  if (floors.http.b) rows.push(['loopback HTTP upload of the phase b bodies to a discarding server, concurrency 1', `${fmt(floors.http.b, 0)} MB/s`]);
  if (floors.http.c) rows.push(['loopback HTTP upload of the phase c stream to a discarding server', `${fmt(floors.http.c, 0)} MB/s`]);
  return markdownTable(['floor', 'rate'], rows, ['l', 'r']);
}

function renderPhases(phases: PhaseResult[]): string {
  const rows = phases.map((p) => {
    const lat = p.stats.latenciesMs;
    const cores = (s: number | undefined) => (s === undefined ? '–' : fmt(s / p.seconds, 2));
    const share = (part: number) => `${fmt((100 * part) / p.serverCpuSeconds, 0)}%`;
    const main = p.serverMainThreadCpuSeconds === undefined ? '' : `, ${share(p.serverMainThreadCpuSeconds)} main thread`;
    const sys = p.serverCpuSeconds > 0 ? ` (${share(p.serverSystemCpuSeconds)} sys${main})` : '';
    const cpuCost =
      (p.group === 'a' ? `${fmt((p.serverCpuSeconds * 1000) / p.instances, 2)} ms/inst` : `${fmt((p.serverCpuSeconds * 1000) / (p.bytes / 1e6), 2)} ms/MB`) + sys;
    const rssDelta = p.peakRssBytes - p.startRssBytes;
    return [
      p.id,
      String(p.requests),
      String(p.instances),
      fmt(p.bytes / 1e6, 1),
      fmt(p.seconds, 2),
      fmt(p.instances / p.seconds, 1),
      fmt(p.bytes / 1e6 / p.seconds, 1),
      `${fmt(quantile(lat, 0.5), 0)} / ${fmt(quantile(lat, 0.99), 0)}`,
      `${cores(p.serverCpuSeconds)} / ${cores(p.dbCpuSeconds)} / ${cores(p.clientCpuSeconds)}`,
      `${fmt(p.machineBusy * 100, 0)}%`,
      cpuCost,
      `${fmt(p.peakRssBytes / 1e6, 0)} (${rssDelta >= 0 ? '+' : ''}${fmt(rssDelta / 1e6, 0)})`,
      p.floor ? `${fmt(p.floor.ratio, 2)} (${p.floor.label})` : '–',
      String(p.stats.failures),
      p.check.text,
      p.target?.text ?? '–',
      p.target ? (p.target.pass ? 'PASS' : 'FAIL') : p.check.ok ? 'ok' : 'FAIL',
    ];
  });
  return markdownTable(
    ['phase', 'reqs', 'inst', 'MB', 's', 'inst/s', 'MB/s', 'p50 / p99 ms', 'cores: server / db / client', 'busy', 'server CPU', 'server peak RSS MB (+ over start)', 'vs floor', 'failures', 'stored check', 'target', 'result'],
    rows,
    ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l', 'l', 'l'],
  );
}
