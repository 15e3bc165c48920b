import { parseArgs } from 'node:util';
import { runDicomwebChecks } from './dicomweb-checks';
import { runFhirChecks } from './fhir-checks';
import { KitHttp } from './http';
import { Report, type CheckResult, type Outcome } from './report';

/** What the kit runs against. */
export interface KitOptions {
  baseUrl: string;
  token?: string;
  dicomwebPath: string;
  fhirPath: string;
  only?: 'dicomweb' | 'fhir';
  /** Skip the checks of imaging-lake-only behaviour (for a peer such as Orthanc). */
  peer: boolean;
}

/** The kit's result: every check and the counts. */
export interface KitResult {
  results: CheckResult[];
  summary: Record<Outcome, number>;
  ok: boolean;
}

const USAGE = 'usage: npm run conformance -- --base-url URL [--token T] [--dicomweb-path /dicomweb] [--fhir-path /fhir] [--only dicomweb|fhir] [--peer]';

/** Parses the command line; throws with the usage text on bad input. */
export function parseKitArgs(argv: string[]): KitOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      'base-url': { type: 'string' },
      token: { type: 'string' },
      'dicomweb-path': { type: 'string', default: '/dicomweb' },
      'fhir-path': { type: 'string', default: '/fhir' },
      only: { type: 'string' },
      peer: { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  const baseUrl = values['base-url'];
  if (!baseUrl || !/^https?:\/\//.test(baseUrl)) throw new Error(`--base-url must be an http(s) URL\n${USAGE}`);
  if (values.only !== undefined && values.only !== 'dicomweb' && values.only !== 'fhir') throw new Error(`--only must be dicomweb or fhir\n${USAGE}`);
  const trim = (s: string) => s.replace(/\/+$/, '');
  return {
    baseUrl: trim(baseUrl),
    token: values.token,
    dicomwebPath: trim(values['dicomweb-path']!),
    fhirPath: trim(values['fhir-path']!),
    only: values.only as KitOptions['only'],
    peer: values.peer!,
  };
}

/** Runs the black-box checks over HTTP against `options.baseUrl`, printing one line per check. */
export async function runConformanceKit(options: KitOptions, print: (line: string) => void = (l) => process.stdout.write(`${l}\n`)): Promise<KitResult> {
  const report = new Report(print, options.peer);
  const http = new KitHttp(options.baseUrl, options.token);
  const hasToken = Boolean(options.token);
  if (options.only !== 'fhir') await runDicomwebChecks(report, http, options.dicomwebPath, { hasToken });
  if (options.only !== 'dicomweb') await runFhirChecks(report, http, options.fhirPath, { hasToken });
  const summary = report.summary();
  print(`summary: ${summary.PASS} passed, ${summary.FAIL} failed, ${summary.SKIP} skipped (${options.baseUrl})`);
  return { results: report.results, summary, ok: summary.FAIL === 0 && summary.PASS > 0 };
}

async function main(): Promise<void> {
  let options: KitOptions;
  try {
    options = parseKitArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 2;
    return;
  }
  const result = await runConformanceKit(options);
  process.exitCode = result.ok ? 0 : 1;
}

if (require.main === module) {
  void main();
}
