import { spawn } from 'node:child_process';
import path from 'node:path';
import { loadConfig } from '../../src/config';
import { mintLocalToken } from '../../src/auth/local-token';
import { startServer, type ServerProcess } from './server-process';

/**
 * The server the FHIR benchmark drives: the built one (`node dist/main.js serve`, as
 * bench/stow.ts runs it) or the sources through tsx (`--server source`, no build needed; the
 * same code once loaded). Requests carry an admin bearer token from the local issuer, so the
 * benchmark keeps working behind the access guard.
 */
export interface FhirBenchServer {
  server: ServerProcess;
  /** `Authorization` header value. */
  authorization: string;
}

/** Starts the server with `env` (the built one with `nodeFlags`, e.g. `--cpu-prof`) and mints its admin token. */
export async function startFhirBenchServer(repoRoot: string, env: Record<string, string>, from: 'dist' | 'source', nodeFlags: string[] = []): Promise<FhirBenchServer> {
  const server = from === 'dist' ? await startServer({ repoRoot, env, nodeFlags }) : await startSourceServer(repoRoot, env);
  return { server, authorization: server.headers?.Authorization ?? (await mintAuthorization(env)) };
}

/** `Bearer <admin token>` signed with the keys under env.DATA_DIR, as `imaging-lake token --role admin` does. */
async function mintAuthorization(env: Record<string, string>): Promise<string> {
  const config = loadConfig(env);
  const token = await mintLocalToken({ role: 'admin', ttlSeconds: Math.min(86_400, config.auth.localTokenMaxTtlSeconds) }, { config: config.auth });
  return `Bearer ${token.accessToken}`;
}

async function startSourceServer(repoRoot: string, env: Record<string, string>): Promise<ServerProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/main.ts'), 'serve'], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let tail = '';
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString('utf8')).slice(-16_384);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exit: string | null = null;
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exit = signal ? `signal ${signal}` : `exit code ${code}`;
      resolve();
    }),
  );
  const baseUrl = `http://${env.HOST ?? '127.0.0.1'}:${env.PORT}`;
  const headers: Record<string, string> = {};
  const handle: ServerProcess = {
    pid: child.pid ?? -1,
    baseUrl,
    port: Number(env.PORT),
    headers,
    outputTail: () => tail,
    exited: () => exit,
    async stop(graceMs = 20_000) {
      if (exit) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => exit || child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
  const deadline = Date.now() + 180_000;
  for (;;) {
    if (exit) throw new Error(`server exited before it was ready (${exit}):\n${tail}`);
    try {
      const res = await fetch(`${baseUrl}/readyz`, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      if (res.status === 200) {
        headers.Authorization = await mintAuthorization(env);
        return handle;
      }
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await handle.stop(2_000);
      throw new Error(`server was not ready within 180 s:\n${tail}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}
