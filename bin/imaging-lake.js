#!/usr/bin/env node
// The CLI runs the compiled server (built by `npm install` through the `prepare` script).
const path = require('node:path');
const fs = require('node:fs');
const { spawn } = require('node:child_process');
const serverNodeFlags = require('./server-node-flags');

const compiled = path.join(__dirname, '..', 'dist', 'main.js');
if (!fs.existsSync(compiled)) {
  process.stderr.write('imaging-lake: not built yet; run `npm run build` (npm install does it) first\n');
  process.exit(1);
}

// `serve` needs flags V8 reads only at start (bin/server-node-flags.js); a shebang cannot pass
// them portably, so the server runs as a child with them, and this process only relays signals.
const missing = serverNodeFlags.filter((flag) => !process.execArgv.includes(flag));
if (process.argv[2] === 'serve' && missing.length > 0) {
  const child = spawn(process.execPath, [...process.execArgv, ...missing, compiled, ...process.argv.slice(2)], { stdio: 'inherit' });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
  child.once('error', (err) => {
    process.stderr.write(`imaging-lake: ${(err && err.stack) || err}\n`);
    process.exit(1);
  });
  child.once('exit', (code, signal) => process.exit(code ?? (signal ? 128 + (require('node:os').constants.signals[signal] || 0) : 1)));
} else {
  require(compiled)
    .main(process.argv, process.env)
    .catch((err) => {
      process.stderr.write(`imaging-lake: ${(err && err.stack) || err}\n`);
      process.exit(1);
    });
}
