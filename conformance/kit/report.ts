/** The outcome of one conformance check. */
export type Outcome = 'PASS' | 'FAIL' | 'SKIP';

/** One line of the kit's report. */
export interface CheckResult {
  group: 'dicomweb' | 'fhir';
  name: string;
  outcome: Outcome;
  /** Why it failed or was skipped; empty on PASS. */
  reason: string;
  /** True for checks of imaging-lake behaviour beyond the standards (skipped with --peer). */
  oursOnly: boolean;
}

/** Thrown inside a check to skip it with a reason (e.g. an earlier step it depends on failed). */
export class SkipCheck extends Error {}

/** Thrown (or use `expect`) when the server's answer does not conform. */
export class CheckFailure extends Error {}

/** Fails the current check with `message` unless `condition` holds. */
export function expect(condition: unknown, message: string): asserts condition {
  if (!condition) throw new CheckFailure(message);
}

/** Collects check results and prints one line per check as it completes. */
export class Report {
  readonly results: CheckResult[] = [];

  constructor(
    private readonly print: (line: string) => void,
    /** Skip checks marked as imaging-lake-only (for peers such as Orthanc). */
    private readonly skipOursOnly: boolean,
  ) {}

  /** Runs one check: PASS when `fn` resolves, FAIL when it throws, SKIP on SkipCheck. */
  async check(group: CheckResult['group'], name: string, fn: () => Promise<void>, opts: { oursOnly?: boolean } = {}): Promise<boolean> {
    const oursOnly = opts.oursOnly ?? false;
    let result: CheckResult;
    if (oursOnly && this.skipOursOnly) {
      result = { group, name, outcome: 'SKIP', reason: 'imaging-lake-only check (--peer)', oursOnly };
    } else {
      try {
        await fn();
        result = { group, name, outcome: 'PASS', reason: '', oursOnly };
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        result = err instanceof SkipCheck ? { group, name, outcome: 'SKIP', reason: message, oursOnly } : { group, name, outcome: 'FAIL', reason: message, oursOnly };
      }
    }
    this.results.push(result);
    const tag = oursOnly ? ' [imaging-lake]' : '';
    this.print(`${result.outcome} ${group}: ${name}${tag}${result.reason ? ` -- ${result.reason}` : ''}`);
    return result.outcome === 'PASS';
  }

  /** Counts per outcome. */
  summary(): Record<Outcome, number> {
    const counts: Record<Outcome, number> = { PASS: 0, FAIL: 0, SKIP: 0 };
    for (const r of this.results) counts[r.outcome] += 1;
    return counts;
  }
}
