import fs from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');
// Plain CommonJS, so that bench/lib/server-process.ts and tools can read it without a build.
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
});
