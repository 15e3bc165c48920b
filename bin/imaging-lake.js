#!/usr/bin/env node
// The CLI runs the compiled server (built by `npm install` through the `prepare` script).
const path = require('node:path');
const fs = require('node:fs');

const compiled = path.join(__dirname, '..', 'dist', 'main.js');
if (!fs.existsSync(compiled)) {
  process.stderr.write('imaging-lake: not built yet; run `npm run build` (npm install does it) first\n');
  process.exit(1);
}
require(compiled)
  .main(process.argv, process.env)
  .catch((err) => {
    process.stderr.write(`imaging-lake: ${(err && err.stack) || err}\n`);
    process.exit(1);
  });
