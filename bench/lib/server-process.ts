import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, statSync, readdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { bearerHeaders, mintAdminToken } from './auth-token';
const SERVER_NODE_FLAGS: string[] = require('../../bin/server-node-flags.js');

/** The built server running as a child process, as the benchmark drives it. */
export interface ServerProcess {
  readonly pid: number;
  readonly baseUrl: string;
  readonly port: number;
  /**
   * Headers every request must carry: `Authorization: Bearer <admin token>` minted for this
   * DATA_DIR by startServer() (optional so that other launchers can build a handle without one).
   */
  readonly headers?: Record<string, string>;
  /** Last lines the server wrote (stdout and stderr), for failure reports. */
  outputTail(): string;
  /** Set once the process has exited (code or signal). */
  exited(): string | null;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

export interface StartServerOptions {
  repoRoot: string;
  env: Record<string, string>;
  /** Extra node flags, e.g. ['--cpu-prof', '--cpu-prof-dir=...']. */
  nodeFlags?: string[];
  readyTimeoutMs?: number;
  /** Also write everything the server prints (stdout and stderr) into this file, e.g. its --trace-gc lines. */
  logFile?: string;
}

const TAIL_BYTES = 16 * 1024;

/**
 * The environment every benchmark gives a server it starts: a free loopback port, `dataDir`, warn
 * logging, no orphan sweeper during the measured phases, production mode.
 */
export async function benchServerEnv(dataDir: string): Promise<Record<string, string>> {
  return {
    PORT: String(await findFreePort()),
    HOST: '127.0.0.1',
    DATA_DIR: dataDir,
    LOG_LEVEL: 'warn',
    SWEEP_INTERVAL_SECONDS: '0',
    NODE_ENV: 'production',
  };
}

/** Asks the kernel for a free TCP port on the loopback interface. */
export async function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const address = s.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** Path of the compiled entry point; throws with a hint when the server is not built. */
export function builtEntryPoint(repoRoot: string): string {
  const entry = path.join(repoRoot, 'dist', 'main.js');
  if (!existsSync(entry)) throw new Error(`${entry} does not exist: run \`npm run build\` first`);
  return entry;
}

/** Warns (returns a message) when some file under src/ is newer than the build. */
export function staleBuildWarning(repoRoot: string): string | null {
  const built = statSync(builtEntryPoint(repoRoot)).mtimeMs;
  const newer: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts') && statSync(p).mtimeMs > built) newer.push(path.relative(repoRoot, p));
    }
  };
  walk(path.join(repoRoot, 'src'));
  return newer.length ? `dist/ is older than ${newer.length} file(s) in src/ (e.g. ${newer[0]}); run \`npm run build\`` : null;
}

/**
 * Starts `node dist/main.js serve` with the given environment, waits for GET /readyz to answer
 * 200 (health answers need no token), then mints an admin bearer token with the CLI for the
 * same DATA_DIR. The child has its own process id, so its memory is measured apart from ours.
 */
export async function startServer(options: StartServerOptions): Promise<ServerProcess> {
  const entry = builtEntryPoint(options.repoRoot);
  const port = Number(options.env.PORT);
  const host = options.env.HOST ?? '127.0.0.1';
  // The flags `npm start`, the Docker image and `npx imaging-lake serve` run the server with.
  const serverFlags = SERVER_NODE_FLAGS.filter((f) => !(options.nodeFlags ?? []).some((g) => g.split('=')[0] === f.split('=')[0]));
  const child: ChildProcess = spawn(process.execPath, [...serverFlags, ...(options.nodeFlags ?? []), entry, 'serve'], {
    cwd: options.repoRoot,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let tail = '';
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString('utf8')).slice(-TAIL_BYTES);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  if (options.logFile) {
    const log = createWriteStream(options.logFile, { flags: 'a' });
    child.stdout?.on('data', (c: Buffer) => log.write(c));
    child.stderr?.on('data', (c: Buffer) => log.write(c));
    child.once('exit', () => log.end());
  }
  let exit: string | null = null;
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = signal ? `signal ${signal}` : `exit code ${code}`;
      resolve();
    });
  });
  if (child.pid === undefined) throw new Error('could not spawn the server');
  const pid = child.pid;
  const baseUrl = `http://${host}:${port}`;

  const headers: Record<string, string> = {};
  const handle: ServerProcess = {
    pid,
    baseUrl,
    port,
    headers,
    outputTail: () => tail,
    exited: () => exit,
    async stop(graceMs = 20_000) {
      if (exit) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (!exit) child.kill('SIGKILL');
      }, graceMs);
      await exitPromise;
      clearTimeout(timer);
    },
  };

  const deadline = Date.now() + (options.readyTimeoutMs ?? 120_000);
  for (;;) {
    if (exit) throw new Error(`server exited before it was ready (${exit}):\n${tail}`);
    if (await isReady(baseUrl)) {
      try {
        Object.assign(headers, bearerHeaders(await mintAdminToken(options.repoRoot, options.env)));
      } catch (err) {
        await handle.stop(2_000);
        throw err;
      }
      return handle;
    }
    if (Date.now() > deadline) {
      await handle.stop(2_000);
      throw new Error(`server was not ready within ${options.readyTimeoutMs ?? 120_000} ms:\n${tail}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function isReady(baseUrl: string): Promise<boolean> {
  try {
    const res = await fetch(`${baseUrl}/readyz`, { signal: AbortSignal.timeout(2_000) });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}
