import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const ROOT = path.resolve(__dirname, '..', '..');
// Plain CommonJS, so that bin/imaging-lake.js can read it without a build.
const FLAGS: string[] = require(path.join(ROOT, 'bin', 'server-node-flags.js'));

describe('server node flags (bin/server-node-flags.js)', () => {
  test('npm start passes every one', () => {
    const start: string = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).scripts.start;
    for (const flag of FLAGS) expect(start).toContain(`node ${flag}`);
  });

  test("the Docker image's CMD passes every one", () => {
    const cmd = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8').split('\n').find((l) => l.startsWith('CMD '));
    const argv: string[] = JSON.parse(cmd!.slice(4));
    expect(argv.slice(0, 1 + FLAGS.length)).toEqual(['node', ...FLAGS]);
    expect(argv.slice(-2)).toEqual(['dist/main.js', 'serve']);
  });

  test('`imaging-lake serve` runs the server as a child with them and exits with its status', async () => {
    const bin = path.join(ROOT, 'bin', 'imaging-lake.js');
    // A preload inherited by the child through execArgv reports the flags each process runs with.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'il-flags-'));
    const report = path.join(dir, 'report.js');
    fs.writeFileSync(report, 'process.stderr.write(`execArgv ${JSON.stringify(process.execArgv.filter((a) => a.startsWith("--")))}\\n`);\n');
    try {
      // A bad setting makes the server exit with status 2 at once: the relay must hand that back.
      const failed = await promisify(execFile)(process.execPath, ['-r', report, bin, 'serve'], { env: { PATH: process.env.PATH, PORT: 'eighty' }, timeout: 60_000 }).catch((e) => e);
      expect(failed.code).toBe(2);
      expect(failed.stderr).toMatch(/PORT/);
      expect(failed.stderr).toContain(`execArgv ${JSON.stringify(FLAGS)}`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
