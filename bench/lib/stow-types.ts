import type { DiskFloor, SmallFileFloor } from './machine-floor';
import type { RequestStats } from './stow-client';

/** Shapes shared by the STOW-RS benchmark's modules. */

export type DbKind = 'embedded' | 'postgres';
export type StoreKind = 'fs' | 's3';
export type PhaseGroup = 'a' | 'b' | 'c';

/** Command-line options of bench/stow.ts. */
export interface StowOptions {
  quick: boolean;
  dbs: DbKind[];
  store: StoreKind;
  write: boolean;
  cpuProf: boolean;
  /** Extra node flags for the server process (A/B runs of V8 settings), e.g. ['--max-semi-space-size=8']. */
  nodeFlags: string[];
  phases: Set<PhaseGroup>;
  keep: boolean;
  adminUrl: string;
  seriesSize: number;
  /** Phase a rows to run (e.g. ['x1 c8']); empty: all four. */
  rows: string[];
}

/** How much each phase sends. */
export interface StowSizes {
  /** CT slices per row of phase a. */
  small: number;
  /** Instances per request in the batched rows of phase a. */
  batch: number;
  /** OCT volumes per row of phase b. */
  volumes: number;
  /** Pixel bytes of the phase c instance. */
  largeBytes: number;
  /** Bytes hashed for the SHA-256 floor. */
  shaBytes: number;
  /** Files written for the small-file floor. */
  smallFloorFiles: number;
}

export const FULL_SIZES: StowSizes = { small: 1000, batch: 50, volumes: 10, largeBytes: 2 * 1024 ** 3, shaBytes: 1024 ** 3, smallFloorFiles: 500 };
export const QUICK_SIZES: StowSizes = { small: 200, batch: 50, volumes: 2, largeBytes: 256 * 1024 ** 2, shaBytes: 256 * 1024 ** 2, smallFloorFiles: 200 };

/** Project targets (bench/README.md). */
export const TARGETS = {
  smallInstancesPerSecond: { postgres: 500, embedded: 300 } as Record<DbKind, number>,
  volumeMBps: 150,
  largePeakRssBytes: 300e6,
};

/** What this machine can do at best, measured in the same run. */
export interface Floors {
  sha256MBps: number;
  smallFiles?: SmallFileFloor;
  disk: Partial<Record<PhaseGroup, DiskFloor>>;
  /** Loopback HTTP upload of the same bodies to a discarding server (load generator ceiling). */
  http: Partial<Record<'b' | 'c', number>>;
}

/** CPU and memory seen while a phase ran. */
export interface PhaseMeasurement {
  stats: RequestStats;
  seconds: number;
  serverCpuSeconds: number;
  /** The kernel's part of serverCpuSeconds (system calls: files, sockets, fsync). */
  serverSystemCpuSeconds: number;
  /**
   * The main thread's part of serverCpuSeconds: what bounds one request's throughput when the
   * machine has cores to spare (node runs JavaScript on that thread alone).
   */
  serverMainThreadCpuSeconds?: number;
  /** PostgreSQL backends of the benchmark database (server variant on this machine only). */
  dbCpuSeconds?: number;
  clientCpuSeconds: number;
  /** Share of all CPUs busy during the phase (anything on the machine). */
  machineBusy: number;
  peakRssBytes: number;
  startRssBytes: number;
}

/** One row of the results table. */
export interface PhaseResult extends PhaseMeasurement {
  id: string;
  title: string;
  group: PhaseGroup;
  requests: number;
  instances: number;
  bytes: number;
  check: { ok: boolean; text: string };
  floor?: { label: string; ratio: number };
  target?: { text: string; pass: boolean };
}

/** One server (database + blob store) through the phases. */
export interface VariantResult {
  db: DbKind;
  store: StoreKind;
  startSeconds: number;
  idleRssBytes: number;
  postgresVersion?: string;
  phases: PhaseResult[];
  error?: string;
  profile?: string;
  /** CLOCK_MONOTONIC microseconds spanning the phases (start-up excluded), for the CPU profile. */
  phaseWindow?: { fromUs: number; toUs: number };
}
