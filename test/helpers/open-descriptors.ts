import fs from 'node:fs';

/** Descriptors of this process open on a file whose path ends with `suffix` (Linux /proc). */
export function descriptorsOpenOn(suffix: string): number {
  return fs.readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`).endsWith(suffix);
    } catch {
      return false; // closed meanwhile
    }
  }).length;
}
