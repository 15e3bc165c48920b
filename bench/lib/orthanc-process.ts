import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * Orthanc (https://www.orthanc-server.com) with its DICOMweb plugin, from the Debian packages,
 * run as a child process on a generated configuration in a temporary directory: the server the
 * comparison benchmark measures imaging-lake against.
 */

/** The command that installs what the comparison needs. */
export const ORTHANC_INSTALL_HINT =
  `${process.getuid?.() === 0 ? '' : 'sudo '}apt-get update && ${process.getuid?.() === 0 ? '' : 'sudo '}apt-get install -y orthanc orthanc-dicomweb orthanc-postgresql`;

/** Where the installed pieces are. */
export interface OrthancInstall {
  binary: string;
  version: string;
  dicomWebPlugin: string;
  dicomWebVersion: string;
  postgresIndexPlugin?: string;
  postgresVersion?: string;
}

function sh(cmd: string, args: string[]): string | null {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

/** A file of a Debian package whose name ends with `suffix` (e.g. `libOrthancDicomWeb.so`), as `dpkg -L` lists it. */
function packagedFile(pkg: string, suffix: string): string | undefined {
  const files = (sh('dpkg', ['-L', pkg]) ?? '').split('\n').filter((f) => f.endsWith(suffix) && existsSync(f));
  // Prefer the plugins directory (a symlink to the versioned library).
  return files.find((f) => f.includes('/plugins/')) ?? files[0];
}

/** Finds Orthanc and its plugins; returns what is missing instead when they are not installed. */
export function findOrthanc(needPostgres: boolean): OrthancInstall | { missing: string[] } {
  const missing: string[] = [];
  const binary = ['/usr/sbin/Orthanc', '/usr/bin/Orthanc', '/usr/local/bin/Orthanc'].find((p) => existsSync(p)) ?? sh('sh', ['-c', 'command -v Orthanc']);
  if (!binary) missing.push('orthanc (the Orthanc binary)');
  const dicomWebPlugin = packagedFile('orthanc-dicomweb', 'libOrthancDicomWeb.so');
  if (!dicomWebPlugin) missing.push('orthanc-dicomweb (libOrthancDicomWeb.so, found with `dpkg -L orthanc-dicomweb`)');
  const postgresIndexPlugin = packagedFile('orthanc-postgresql', 'libOrthancPostgreSQLIndex.so');
  if (needPostgres && !postgresIndexPlugin) missing.push('orthanc-postgresql (libOrthancPostgreSQLIndex.so)');
  if (missing.length || !binary || !dicomWebPlugin) return { missing };
  const version = (sh(binary, ['--version']) ?? '').split('\n')[0] ?? 'Orthanc ?';
  const pkgVersion = (pkg: string) => sh('dpkg-query', ['-W', '-f=${Version}', pkg]) ?? '?';
  return {
    binary,
    version,
    dicomWebPlugin,
    dicomWebVersion: pkgVersion('orthanc-dicomweb'),
    postgresIndexPlugin,
    postgresVersion: postgresIndexPlugin ? pkgVersion('orthanc-postgresql') : undefined,
  };
}

/** The PostgreSQL database Orthanc's index plugin should use. */
export interface OrthancPostgres {
  host: string;
  port: number;
  database: string;
  username: string;
  password: string;
}

/**
 * The configuration: the brief's settings (loopback only, no authentication, DICOMweb at
 * /dicom-web/, storage and index in the temp directory) plus the settings the Orthanc Book's
 * "Scalability of Orthanc" page recommends for performance, so it is measured at its best.
 */
export function orthancConfig(install: OrthancInstall, dir: string, httpPort: number, postgres?: OrthancPostgres): Record<string, unknown> {
  const plugins = [install.dicomWebPlugin];
  if (postgres && install.postgresIndexPlugin) plugins.push(install.postgresIndexPlugin);
  return {
    Name: 'imaging-lake-bench',
    StorageDirectory: path.join(dir, 'storage'),
    IndexDirectory: path.join(dir, 'index'),
    HttpPort: httpPort,
    RemoteAccessAllowed: false,
    AuthenticationEnabled: false,
    DicomServerEnabled: false,
    Plugins: plugins,
    DicomWeb: { Enable: true, Root: '/dicom-web/', EnableWado: false, Host: '127.0.0.1', Ssl: false },
    // Scalability of Orthanc (Orthanc Book): keep-alive, no Nagle, no job persistence, no file reads on C-FIND.
    KeepAlive: true,
    TcpNoDelay: true,
    SaveJobs: false,
    StorageAccessOnFind: 'Never',
    // Answers are compared uncompressed (the benchmark client never asks for gzip anyway).
    HttpCompressionEnabled: false,
    StorageCompression: false,
    // Durable like imaging-lake: files are fsynced before a store is acknowledged (the default, stated).
    SyncStorageArea: true,
    ...(postgres
      ? {
          PostgreSQL: {
            EnableIndex: true,
            EnableStorage: false,
            Host: postgres.host,
            Port: postgres.port,
            Database: postgres.database,
            Username: postgres.username,
            Password: postgres.password,
            Lock: false,
            // "Since ... PostgreSQL plugins 4.0 ... You can have multiple connections": the scalability page suggests 5.
            IndexConnectionsCount: 5,
          },
        }
      : {}),
  };
}

/** A running Orthanc. */
export interface OrthancProcess {
  readonly pid: number;
  readonly baseUrl: string;
  readonly configFile: string;
  outputTail(): string;
  exited(): string | null;
  stop(graceMs?: number): Promise<void>;
}

/** Writes the configuration into `dir`, starts Orthanc on it and waits until GET /system answers 200. */
export async function startOrthanc(install: OrthancInstall, dir: string, httpPort: number, postgres?: OrthancPostgres): Promise<OrthancProcess> {
  await mkdir(dir, { recursive: true });
  const configFile = path.join(dir, 'orthanc.json');
  await writeFile(configFile, JSON.stringify(orthancConfig(install, dir, httpPort, postgres), null, 2));
  const child: ChildProcess = spawn(install.binary, [configFile], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let tail = '';
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString('utf8')).slice(-16_384);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exit: string | null = null;
  const exitPromise = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exit = signal ? `signal ${signal}` : `exit code ${code}`;
      resolve();
    }),
  );
  if (child.pid === undefined) throw new Error(`could not spawn ${install.binary}`);
  const baseUrl = `http://127.0.0.1:${httpPort}`;
  const handle: OrthancProcess = {
    pid: child.pid,
    baseUrl,
    configFile,
    outputTail: () => tail,
    exited: () => exit,
    async stop(graceMs = 20_000) {
      if (exit) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => exit || child.kill('SIGKILL'), graceMs);
      await exitPromise;
      clearTimeout(timer);
    },
  };
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (exit) throw new Error(`Orthanc exited before it was ready (${exit}):\n${tail}`);
    try {
      const res = await fetch(`${baseUrl}/system`, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      if (res.status === 200) return handle;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await handle.stop(2_000);
      throw new Error(`Orthanc was not ready within 120 s:\n${tail}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Counts of what Orthanc has stored (GET /statistics). */
export async function orthancStatistics(baseUrl: string): Promise<{ instances: number; studies: number; diskMB: number }> {
  const res = await fetch(`${baseUrl}/statistics`);
  const s = (await res.json()) as { CountInstances: number; CountStudies: number; TotalDiskSizeMB: number };
  return { instances: s.CountInstances, studies: s.CountStudies, diskMB: s.TotalDiskSizeMB };
}
