import { readFileSync } from 'node:fs';

/**
 * Reads a V8 .cpuprofile (as written by `node --cpu-prof`) and says where the time went:
 * self time per function, inclusive time per function, and self time per package or file.
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** One line of a summary: a name and its milliseconds. */
export interface ProfileEntry {
  name: string;
  ms: number;
  share: number;
}

/** The top entries of a profile. */
export interface ProfileSummary {
  totalMs: number;
  idleMs: number;
  busyMs: number;
  selfByFunction: ProfileEntry[];
  inclusiveByFunction: ProfileEntry[];
  selfByArea: ProfileEntry[];
}

const META = new Set(['(idle)', '(program)', '(garbage collector)', '(root)']);

/**
 * Summarises the profile at `file`; shares are of the busy (non-idle) time. With `window`
 * (CLOCK_MONOTONIC microseconds, as `process.hrtime.bigint() / 1000n` gives in any process),
 * only samples taken inside it count, e.g. the benchmark phases without the server's start-up.
 */
export function summariseCpuProfile(file: string, top = 20, window?: { fromUs: number; toUs: number }): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const inWindow = (at: number) => !window || (at >= window.fromUs && at <= window.toUs);
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const area = new Map<string, number>();
  let idle = 0;
  let total = 0;
  let at = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i] ?? 0;
    const delta = (profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0) / 1000;
    if (!inWindow(at)) continue;
    const node = byId.get(profile.samples[i]!);
    if (!node) continue;
    total += delta;
    const key = functionKey(node);
    if (node.callFrame.functionName === '(idle)') {
      idle += delta;
      continue;
    }
    add(self, key, delta);
    add(area, areaOf(node), delta);
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const n = byId.get(id)!;
      const k = functionKey(n);
      if (META.has(n.callFrame.functionName) || seen.has(k)) continue;
      seen.add(k);
      add(inclusive, k, delta);
    }
  }
  const busy = total - idle;
  const rank = (m: Map<string, number>): ProfileEntry[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, ms]) => ({ name, ms, share: busy > 0 ? ms / busy : 0 }));
  return { totalMs: total, idleMs: idle, busyMs: busy, selfByFunction: rank(self), inclusiveByFunction: rank(inclusive), selfByArea: rank(area) };
}

/** Renders a summary as markdown tables. */
export function renderCpuProfile(s: ProfileSummary, title: string): string {
  const table = (heading: string, rows: ProfileEntry[]) =>
    [`| ${heading} | ms | % of busy |`, '|---|---:|---:|', ...rows.map((r) => `| \`${r.name.replace(/\|/g, '\\|')}\` | ${r.ms.toFixed(0)} | ${(r.share * 100).toFixed(1)} |`)].join('\n');
  return [
    `### ${title}`,
    '',
    `Sampled ${(s.totalMs / 1000).toFixed(1)} s: busy ${(s.busyMs / 1000).toFixed(1)} s, idle ${(s.idleMs / 1000).toFixed(1)} s (main thread only: file writes and fsync on the libuv thread pool count as idle).`,
    '',
    table('self time by area', s.selfByArea),
    '',
    table('self time by function', s.selfByFunction),
    '',
    table('inclusive time by function', s.inclusiveByFunction),
  ].join('\n');
}

function add(m: Map<string, number>, k: string, v: number): void {
  m.set(k, (m.get(k) ?? 0) + v);
}

function functionKey(n: ProfileNode): string {
  const f = n.callFrame;
  if (!f.url) return f.functionName || '(anonymous)';
  return `${f.functionName || '(anonymous)'} ${shortUrl(f.url)}:${f.lineNumber + 1}`;
}

function shortUrl(url: string): string {
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) return url.slice(nm + 'node_modules/'.length);
  const dist = url.lastIndexOf('/dist/');
  if (dist >= 0) return url.slice(dist + 1);
  return url.replace(/^file:\/\//, '');
}

/** The package (node_modules), node internal module, or dist/ file a frame belongs to. */
function areaOf(n: ProfileNode): string {
  const f = n.callFrame;
  if (META.has(f.functionName)) return f.functionName;
  const url = f.url;
  if (!url) return '(native / V8 builtins)';
  if (url.startsWith('node:')) return url.replace(/^node:internal\/([^/]+).*$/, 'node:$1');
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  const dist = url.lastIndexOf('/dist/');
  if (dist >= 0) return url.slice(dist + 1);
  return shortUrl(url);
}
