import { execFile } from 'node:child_process';

/** What a dcmtk tool printed, and how it exited. */
export interface DcmtkRun {
  code: number;
  output: string;
}

/** Runs a dcmtk tool (storescu, findscu, ...); resolves with its exit code and output (never rejects on a non-zero exit). */
export function dcmtk(tool: string, args: string[], timeoutMs = 60_000): Promise<DcmtkRun> {
  return new Promise((resolve) => {
    execFile(tool, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}
