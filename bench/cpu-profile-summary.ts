import { renderCpuProfile, summariseCpuProfile } from './lib/cpu-profile';

/** `npx tsx bench/cpu-profile-summary.ts FILE.cpuprofile [TOP]`: where a server's CPU time went. */
function main(argv: string[]): void {
  const [file, top] = argv;
  if (!file) {
    process.stderr.write('usage: npx tsx bench/cpu-profile-summary.ts FILE.cpuprofile [TOP]\n');
    process.exit(2);
  }
  process.stdout.write(`${renderCpuProfile(summariseCpuProfile(file, top ? Number(top) : 25), file)}\n`);
}

main(process.argv.slice(2));
