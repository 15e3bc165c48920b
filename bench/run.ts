import { spawn } from 'node:child_process';
import path from 'node:path';
import { runOrthancComparison } from './orthanc';
import { runQidoWadoBenchmark } from './qido-wado';
import { runStowBenchmark } from './stow';

/**
 * `npm run bench [-- FLAGS]`: every benchmark in bench/, one after another (bench/README.md).
 * Each gets the flags it understands; `--only stow,qido-wado,orthanc,fhir,auth,deid` picks some
 * of them. fhir, auth and deid fork their own server process, so they run as child scripts.
 * Exit status: 1 if any request failed, else 2 for bad arguments, else 3 if a performance target
 * was missed, else 4 if Orthanc is not installed (the comparison is skipped), else 0.
 */

interface Bench {
  name: string;
  run: (argv: string[]) => Promise<number>;
  /** Flags it accepts, and whether each takes a value. */
  flags: Record<string, boolean>;
}

const COMMON = { quick: false, write: false, keep: false, 'admin-url': true };

/** Runs `bench/<file>` as its own process (it forks its server itself) and answers its exit status. */
function script(file: string): (argv: string[]) => Promise<number> {
  return (argv) =>
    new Promise((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, file), ...argv], { stdio: 'inherit' });
      child.on('error', () => resolve(1));
      child.on('exit', (code) => resolve(code ?? 1));
    });
}
const BENCHES: Bench[] = [
  { name: 'stow', run: runStowBenchmark, flags: { ...COMMON, db: true, store: true, 'cpu-prof': false, phases: true, 'series-size': true } },
  { name: 'qido-wado', run: runQidoWadoBenchmark, flags: { ...COMMON, scales: true, requests: true } },
  { name: 'orthanc', run: runOrthancComparison, flags: { ...COMMON, db: true, 'qido-scales': true, reps: true } },
  { name: 'fhir', run: script('fhir.ts'), flags: { quick: false, write: false, keep: false, 'admin-url': true } },
  { name: 'auth', run: script('auth.ts'), flags: { write: false, db: true, 'admin-url': true } },
  { name: 'deid', run: script('deid.ts'), flags: { quick: false, write: false, db: true, 'admin-url': true } },
];

/** The arguments of `argv` that `bench` accepts (`--name value` and `--name=value` forms). */
export function argsFor(bench: Bench, argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [name, inline] = arg.replace(/^--/, '').split(/=(.*)/s, 2);
    const takesValue = bench.flags[name!];
    const value = inline === undefined && takesValue ? argv[++i] : undefined;
    if (takesValue === undefined) continue;
    out.push(arg);
    if (value !== undefined) out.push(value);
  }
  return out;
}

async function main(argv: string[]): Promise<number> {
  const onlyAt = argv.findIndex((a) => a === '--only' || a.startsWith('--only='));
  let only: Set<string> | null = null;
  if (onlyAt >= 0) {
    const value = argv[onlyAt]!.includes('=') ? argv[onlyAt]!.split('=')[1]! : (argv[onlyAt + 1] ?? '');
    only = new Set(value.split(',').map((s) => s.trim()));
    argv = argv.filter((_, i) => i !== onlyAt && (argv[onlyAt]!.includes('=') || i !== onlyAt + 1));
    for (const n of only) {
      if (!BENCHES.some((b) => b.name === n)) {
        process.stderr.write(`bench/run.ts: --only takes ${BENCHES.map((b) => b.name).join(', ')}; not "${n}"\n`);
        return 2;
      }
    }
  }
  const codes: number[] = [];
  for (const bench of BENCHES) {
    if (only && !only.has(bench.name)) continue;
    const args = argsFor(bench, argv);
    process.stderr.write(`[bench] === ${bench.name} ${args.join(' ')}\n`);
    codes.push(await bench.run(args));
  }
  for (const severity of [1, 2, 3, 4]) if (codes.includes(severity)) return severity;
  return 0;
}

main(process.argv.slice(2))
  .then((code) => process.exit(code))
  .catch((err) => {
    process.stderr.write(`bench/run.ts: ${(err as Error)?.stack ?? err}\n`);
    process.exit(1);
  });
