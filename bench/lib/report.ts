import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';

/** Markdown output of the benchmarks and the keeper of bench/RESULTS.md. */

/** Facts about the machine a run was made on. */
export function describeMachine(dir: string, loadAtStart?: number[]): string[] {
  const sh = (cmd: string, args: string[]): string | null => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      return null;
    }
  };
  const cpuModel = os.cpus()[0]?.model ?? 'unknown CPU';
  const nproc = sh('nproc', []) ?? String(os.cpus().length);
  const mem = sh('free', ['-h'])?.split('\n').find((l) => l.startsWith('Mem:'))?.split(/\s+/)[1] ?? `${(os.totalmem() / 2 ** 30).toFixed(1)}Gi`;
  const uname = sh('uname', ['-srmo']) ?? `${os.type()} ${os.release()} ${os.arch()}`;
  const df = sh('df', ['-hT', dir])?.split('\n')[1]?.split(/\s+/);
  const disk = df ? `${df[0]} (${df[1]}, ${df[2]} total, ${df[4]} free)` : 'unknown';
  return [
    `- CPU: ${nproc} x ${cpuModel} (\`nproc\` = ${nproc})`,
    `- Memory: ${mem} (\`free -h\`)`,
    `- OS: ${uname} (\`uname -srmo\`)`,
    `- Node: ${process.version}`,
    `- Disk under test: ${dir} on ${disk}`,
    `- Load average (1, 5, 15 min)${loadAtStart ? ` at the start: ${loadAtStart.map((l) => l.toFixed(2)).join(', ')};` : ''} at the end: ${os.loadavg().map((l) => l.toFixed(2)).join(', ')} (on ${nproc} CPUs; other work on the machine skews the figures)`,
  ];
}

/** A markdown table from a header row and body rows. */
export function markdownTable(header: string[], rows: string[][], align?: Array<'l' | 'r'>): string {
  const sep = header.map((_, i) => ((align?.[i] ?? 'l') === 'r' ? '---:' : '---'));
  const line = (cells: string[]) => `| ${cells.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`;
  return [line(header), `|${sep.join('|')}|`, ...rows.map(line)].join('\n');
}

/** Number formatting with a fixed count of significant-looking decimals. */
export function fmt(n: number, digits = 1): string {
  if (!Number.isFinite(n)) return '–';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

const HEADER = `# Benchmark results

Written by the benchmarks' \`--write\` flag (see [README.md](README.md) for what each figure means).
Each run replaces its own section (one per benchmark, mode, database and store) and keeps the others.
`;

/**
 * Puts `section` into bench/RESULTS.md between markers named `key`, replacing an earlier
 * section with the same key and keeping the others.
 */
export function updateResultsFile(file: string, key: string, section: string): void {
  const begin = `<!-- run:${key} -->`;
  const end = `<!-- /run:${key} -->`;
  const block = `${begin}\n${section.trim()}\n${end}`;
  let text = existsSync(file) ? readFileSync(file, 'utf8') : HEADER;
  const a = text.indexOf(begin);
  const b = text.indexOf(end);
  if (a >= 0 && b > a) {
    text = text.slice(0, a) + block + text.slice(b + end.length);
  } else {
    text = `${text.trimEnd()}\n\n${block}\n`;
  }
  writeFileSync(file, text.endsWith('\n') ? text : `${text}\n`);
}
