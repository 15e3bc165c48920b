#!/usr/bin/env bash
# `npm test`: the typecheck, the main jest run (PostgreSQL, filesystem store, end-to-end
# clients) and the embedded-engine run (test:embedded-s3, PGlite and an S3-protocol store).
# The main run goes in one lane; the typecheck then the embedded run in a second lane beside it,
# since each jest run is a single process and the machine has two cores. The second lane's
# output is printed when it ends; the exit status is non-zero if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export NODE_OPTIONS='--experimental-vm-modules --no-warnings=ExperimentalWarning'

second_log=$(mktemp)
trap 'rm -f "$second_log"' EXIT
(npm run --silent typecheck && npm run --silent test:embedded-s3) >"$second_log" 2>&1 &
second=$!

npx jest --runInBand
main_status=$?

wait "$second"
second_status=$?
echo '--- typecheck and embedded-engine run (test:embedded-s3) ---'
cat "$second_log"
if [ "$second_status" -ne 0 ]; then echo "typecheck or test:embedded-s3 failed (exit $second_status)"; fi
[ "$main_status" -eq 0 ] && [ "$second_status" -eq 0 ]
