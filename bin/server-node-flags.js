// Node flags the server runs with: `npm start`, the Dockerfile's CMD and the benchmarks
// (bench/lib/server-process.ts); `npx imaging-lake serve` takes them from NODE_OPTIONS (README).
// test/unit/server-node-flags.test.ts checks that those places agree with this list.
//
// --max-semi-space-size=8: V8's young generation grows to two 16 MB semi-spaces under load, all
// of it resident for the life of the process; two of 8 MB keep RSS 16 MB lower. Scavenges come
// twice as often, each copying only the survivors. bench/stow.ts on the embedded engine: a 2 GB
// instance after small-instance traffic peaked at 265-283 MB with it (with src/memory-release.ts),
// 287-299 MB without. It must be given at start: V8 sizes the heap once.
module.exports = ['--max-semi-space-size=8'];
