import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** How long the benchmark's tokens live: longer than any run, within the server's default local-token ceiling. */
export const BENCH_TOKEN_TTL_SECONDS = 86_400;

/**
 * Mints an admin bearer token with the built CLI (`node dist/main.js token --role admin`), with
 * the same environment as the server so that it signs with the keys under the same DATA_DIR.
 * Every request the benchmarks send to imaging-lake carries it.
 */
export async function mintAdminToken(repoRoot: string, env: Record<string, string>): Promise<string> {
  const entry = path.join(repoRoot, 'dist', 'main.js');
  let stdout: string;
  try {
    ({ stdout } = await run(process.execPath, [entry, 'token', '--role', 'admin', '--ttl', String(BENCH_TOKEN_TTL_SECONDS)], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...env },
      timeout: 60_000,
    }));
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`could not mint a bearer token with \`node dist/main.js token --role admin\`: ${(e.stderr || e.message).trim()}`);
  }
  const token = stdout.trim().split('\n').pop() ?? '';
  if (!/^[\w-]+\.[\w-]+\.[\w-]+$/.test(token)) throw new Error(`\`node dist/main.js token\` printed no JWT: ${stdout.slice(0, 200)}`);
  return token;
}

/** The header every benchmark request to imaging-lake carries. */
export function bearerHeaders(token: string): Record<string, string> {
  return { Authorization: `Bearer ${token}` };
}
