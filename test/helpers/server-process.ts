import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';

const ROOT = path.resolve(__dirname, '../..');

/** A server started as a child process (`imaging-lake serve` through tsx), as an operator runs it. */
export interface ServerProcess {
  child: ChildProcess;
  baseUrl: string;
  /** The DIMSE listener's port, when DIMSE_PORT was set. */
  dimsePort?: number;
  pid: number;
  /** Sends SIGKILL and waits for the exit. */
  kill(): Promise<void>;
  /** SIGTERM and wait. */
  stop(): Promise<void>;
}

/** Starts the server in a child process with the given environment and waits until it listens. */
export async function startServerProcess(env: Record<string, string>, timeoutMs = 60_000): Promise<ServerProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/main.ts'), 'serve'], {
    cwd: ROOT,
    env: { ...process.env, PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stderr: string[] = [];
  child.stderr!.on('data', (d) => stderr.push(String(d)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let dimsePort: number | undefined;
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start: ${stderr.join('')}`)), timeoutMs);
    const lines = readline.createInterface({ input: child.stdout! });
    let httpPort: number | undefined;
    // With DIMSE_PORT the DIMSE listener starts after the HTTP server: wait for both.
    const ready = () => {
      if (httpPort === undefined || (env.DIMSE_PORT !== undefined && dimsePort === undefined)) return;
      clearTimeout(timer);
      resolve(httpPort);
    };
    lines.on('line', (line) => {
      try {
        const entry = JSON.parse(line);
        if (entry.msg === 'imaging-lake listening') httpPort = entry.port;
        if (entry.msg === 'DIMSE listener listening') dimsePort = entry.port;
        ready();
      } catch {
        // not a log line
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}: ${stderr.join('')}`));
    });
  });
  return {
    child,
    pid: child.pid!,
    baseUrl: `http://127.0.0.1:${port}`,
    dimsePort,
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}
