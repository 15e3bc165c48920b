import { readFileSync, writeFileSync } from 'node:fs';

/**
 * Memory and CPU figures of another process, read from Linux /proc (proc(5)). The benchmark
 * measures the server as a child process so its RSS is never mixed with the load generator's.
 */

/** Resident set size and its high-water mark, in bytes. */
export interface MemoryFigures {
  rssBytes: number;
  hwmBytes: number;
}

/** Reads VmRSS and VmHWM from /proc/<pid>/status; null once the process is gone. */
export function readMemory(pid: number): MemoryFigures | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'latin1');
  } catch {
    return null;
  }
  const kib = (field: string): number => {
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : 0;
  };
  return { rssBytes: kib('VmRSS'), hwmBytes: kib('VmHWM') };
}

/**
 * Resets the peak RSS (VmHWM) to the current RSS by writing 5 to /proc/<pid>/clear_refs
 * (Linux >= 4.0), so each phase reports its own peak. Returns false where that is not allowed.
 */
export function resetPeakMemory(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** User + system CPU seconds the process has used so far (fields 14 and 15 of /proc/<pid>/stat). */
export function readCpuSeconds(pid: number): number {
  const t = readCpuTimes(pid);
  return t.user + t.system;
}

/** User and system CPU seconds (all threads) the process has used so far. */
export function readCpuTimes(pid: number): { user: number; system: number } {
  return readStatCpu(`/proc/${pid}/stat`);
}

/**
 * CPU seconds of the process's main thread alone (its thread id is the process id): in node
 * the JavaScript thread, apart from libuv's pool (file writes, fsync), GC helpers and compilers.
 */
export function readMainThreadCpuSeconds(pid: number): number {
  const t = readStatCpu(`/proc/${pid}/task/${pid}/stat`);
  return t.user + t.system;
}

function readStatCpu(file: string): { user: number; system: number } {
  try {
    const text = readFileSync(file, 'latin1');
    // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { user: Number(fields[11]) / clockTicksPerSecond(), system: Number(fields[12]) / clockTicksPerSecond() };
  } catch {
    return { user: 0, system: 0 };
  }
}

function clockTicksPerSecond(): number {
  // USER_HZ is 100 on every mainstream Linux architecture; sysconf is not reachable from node.
  return 100;
}

/** Samples a process's RSS at a fixed interval and remembers the largest value seen. */
export class RssSampler {
  private timer: NodeJS.Timeout | null = null;
  private peak = 0;
  private samples = 0;
  private startBytes = 0;

  constructor(
    private readonly pid: number,
    private readonly intervalMs = 50,
  ) {}

  /** Starts sampling (and resets the kernel's peak counter where allowed). */
  start(): void {
    this.peak = 0;
    this.samples = 0;
    resetPeakMemory(this.pid);
    this.sample();
    this.startBytes = this.peak;
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  /** Stops sampling; returns the RSS at start and the peak of the samples and of the kernel's VmHWM since start. */
  stop(): { peakBytes: number; sampledPeakBytes: number; startBytes: number; samples: number } {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.sample();
    const hwm = readMemory(this.pid)?.hwmBytes ?? 0;
    return { peakBytes: Math.max(this.peak, hwm), sampledPeakBytes: this.peak, startBytes: this.startBytes, samples: this.samples };
  }

  private sample(): void {
    const m = readMemory(this.pid);
    if (!m) return;
    this.samples++;
    if (m.rssBytes > this.peak) this.peak = m.rssBytes;
  }
}

/** Busy and total jiffies of all CPUs from /proc/stat (busy = everything but idle and iowait). */
export function readMachineCpu(): { busy: number; total: number } {
  try {
    const line = readFileSync('/proc/stat', 'latin1').split('\n')[0]!;
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    return { busy: total - idle, total };
  } catch {
    return { busy: 0, total: 0 };
  }
}
