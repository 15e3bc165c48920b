import { describeMachine, fmt, markdownTable } from './report';
import type { IngestResult } from './fhir-seed';
import type { ConsistencyResult, MultiplyResult } from './fhir-multiply';
import type { QueryResult, QuerySpec } from './fhir-queries';

/** Everything one run of bench/fhir.ts measured. */
export interface FhirBenchRun {
  command: string;
  stamp: string;
  quick: boolean;
  workRoot: string;
  loadAtStart: number[];
  serverFrom: 'dist' | 'source';
  pgVersion: string;
  ingest: Array<{ label: string; concurrency: number; result: IngestResult }>;
  multiply: MultiplyResult;
  counts: Record<string, number>;
  indexRows: number;
  databaseBytes: number;
  consistency: ConsistencyResult;
  queries: Array<{ spec: QuerySpec; result: QueryResult }>;
  ingestTarget: number;
}

/** The markdown section of a run (also what --write puts into RESULTS.md). */
export function renderFhirRun(run: FhirBenchRun): string {
  const lines: string[] = [];
  lines.push(`## FHIR search and ingest, ${run.quick ? 'quick' : 'full'} run: PostgreSQL ${run.pgVersion}`);
  lines.push('');
  lines.push(`- Date: ${run.stamp}`);
  lines.push(`- Command: \`${run.command}\``);
  lines.push(...describeMachine(run.workRoot, run.loadAtStart));
  lines.push(`- Server: \`${run.serverFrom === 'dist' ? 'node dist/main.js serve' : 'node --import tsx src/main.ts serve'}\` as a child process, LOG_LEVEL=warn`);
  lines.push(
    `- Data: ${Object.entries(run.counts).map(([t, n]) => `${n.toLocaleString('en-US')} ${t}`).join(', ')}; ${run.indexRows.toLocaleString('en-US')} index rows; database ${fmt(run.databaseBytes / 2 ** 30, 2)} GiB`,
  );
  lines.push(
    `- Load: the seed through the engine (below), then ${run.multiply.copies - 1} SQL copies of it (${run.multiply.resources.toLocaleString('en-US')} resources, ${run.multiply.indexRows.toLocaleString('en-US')} index rows, history rows included) in ${fmt(run.multiply.seconds, 0)} s, then VACUUM ANALYZE`,
  );
  const c = run.consistency;
  lines.push(`- Index consistency: ${c.checked} sampled resources (seed and copies) re-indexed with the engine's extractor: ${c.mismatches.length === 0 ? 'all rows match' : `${c.mismatches.length} MISMATCHES (${c.mismatches.slice(0, 3).join('; ')})`}`);
  lines.push('');
  lines.push('### Transaction Bundle ingest (engine path: R4 validation, ICD-10-CM check, references, index rows)');
  lines.push('');
  lines.push(
    markdownTable(
      ['phase', 'concurrency', 'bundles', 'resources', 's', 'resources/s', 'failures', 'target', 'result'],
      run.ingest.map((i) => {
        const rate = i.result.resources / i.result.seconds;
        const targeted = i.concurrency === Math.max(...run.ingest.map((x) => x.concurrency));
        return [
          i.label,
          String(i.concurrency),
          String(i.result.bundles),
          i.result.resources.toLocaleString('en-US'),
          fmt(i.result.seconds, 2),
          fmt(rate, 0),
          String(i.result.failures.length),
          targeted ? `>= ${run.ingestTarget.toLocaleString('en-US')}/s` : '–',
          targeted ? (i.result.failures.length === 0 && rate >= run.ingestTarget ? 'PASS' : 'FAIL') : 'ok',
        ];
      }),
      ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'l', 'l'],
    ),
  );
  lines.push('');
  lines.push('### Search latency (sequential requests over HTTP, after warm-up; every answer checked)');
  lines.push('');
  lines.push(
    markdownTable(
      ['query', 'example', 'n', 'p50 ms', 'p95 ms', 'max ms', 'matches / includes', 'failures', 'target', 'result'],
      run.queries.map(({ spec, result }) => [
        result.name,
        `\`${result.example}\``,
        String(result.n),
        fmt(result.p50, 1),
        fmt(result.p95, 1),
        fmt(result.max, 1),
        `${fmt(result.matches, 1)} / ${fmt(result.includes, 1)}`,
        String(result.failures.length),
        spec.targetP95Ms ? `p95 < ${spec.targetP95Ms} ms` : '–',
        spec.targetP95Ms ? (result.failures.length === 0 && result.p95 < spec.targetP95Ms ? 'PASS' : 'FAIL') : 'ok',
      ]),
      ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'l', 'l'],
    ),
  );
  const failures = [...run.ingest.flatMap((i) => i.result.failures), ...run.queries.flatMap((q) => q.result.failures)];
  if (failures.length > 0) {
    lines.push('');
    lines.push(`First failures: ${failures.slice(0, 3).map((f) => `\`${f.slice(0, 200)}\``).join('; ')}`);
  }
  return lines.join('\n');
}
