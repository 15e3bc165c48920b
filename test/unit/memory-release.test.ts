import { EventEmitter } from 'node:events';
import v8 from 'node:v8';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { exposeFullCollection, startMemoryRelease, type MemoryReleaseOptions } from '../../src/memory-release';

const MiB = 1024 * 1024;

/** A release driven by hand: a fake heap size, clock and collector. */
function harness(overrides: Partial<MemoryReleaseOptions> = {}) {
  const state = { heap: 100 * MiB, clock: 0, collected: 0 };
  const release = startMemoryRelease({
    slackBytes: 16 * MiB,
    idleMs: 2_000,
    largeBodyBytes: 64 * MiB,
    heapBytes: () => state.heap,
    now: () => state.clock,
    collect: () => {
      state.collected++;
      state.heap = 100 * MiB;
    },
    ...overrides,
  });
  const request = (headers: Record<string, string>) => {
    const res = new EventEmitter();
    release.onRequest({ headers } as unknown as IncomingMessage, res as unknown as ServerResponse);
    return () => res.emit('close');
  };
  return { state, release, request };
}

describe('startMemoryRelease', () => {
  test('collects before a large upload when the heap grew past the slack', () => {
    const { state, release, request } = harness();
    state.heap += 40 * MiB;
    request({ 'content-length': String(2 * 1024 ** 3) });
    expect(state.collected).toBe(1);
    expect(release.stats().collections).toBe(1);
    release.stop();
  });

  test('a chunked upload (length unknown) counts as large', () => {
    const { state, release, request } = harness();
    state.heap += 40 * MiB;
    request({ 'transfer-encoding': 'chunked' });
    expect(state.collected).toBe(1);
    release.stop();
  });

  test('before large uploads, at most one collection per spacing interval', () => {
    const { state, release, request } = harness({ largeUploadSpacingMs: 30_000 });
    state.heap += 40 * MiB;
    request({ 'transfer-encoding': 'chunked' });
    state.heap += 40 * MiB;
    state.clock += 10_000;
    request({ 'transfer-encoding': 'chunked' });
    expect(state.collected).toBe(1);
    state.clock += 20_000;
    request({ 'transfer-encoding': 'chunked' });
    expect(state.collected).toBe(2);
    release.stop();
  });

  test('does not collect before a small request, nor before a large one while the heap is within the slack', () => {
    const { state, release, request } = harness();
    state.heap += 40 * MiB;
    request({ 'content-length': '34000' });
    expect(state.collected).toBe(0);
    state.heap = 110 * MiB;
    request({ 'content-length': String(128 * MiB) });
    expect(state.collected).toBe(0);
    release.stop();
  });

  test('collects once the server has been idle, not while a request is in flight', () => {
    const { state, release, request } = harness();
    const finish = request({ 'content-length': '34000' });
    state.heap += 40 * MiB;
    state.clock += 10_000;
    release.checkIdle();
    expect(state.collected).toBe(0);
    finish();
    state.clock += 1_000;
    release.checkIdle();
    expect(state.collected).toBe(0);
    state.clock += 1_000;
    release.checkIdle();
    expect(state.collected).toBe(1);
    // Nothing grew since: no second collection.
    state.clock += 10_000;
    release.checkIdle();
    expect(state.collected).toBe(1);
    release.stop();
  });

  test('slack 0 turns it off', () => {
    const { state, release, request } = harness({ slackBytes: 0 });
    state.heap += 400 * MiB;
    request({ 'content-length': String(2 * 1024 ** 3) });
    state.clock += 10_000;
    release.checkIdle();
    expect(state.collected).toBe(0);
    release.stop();
  });
});

describe('exposeFullCollection', () => {
  test('returns a compacting full collection: the old space shrinks to its live size', () => {
    const collect = exposeFullCollection();
    expect(typeof collect).toBe('function');
    const oldSpace = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'old_space')!.space_size;
    // Survivors scattered over every page: a collection that only frees leaves the pages committed.
    const keep: unknown[] = [];
    let junk: unknown[] | null = [];
    for (let i = 0; i < 600_000; i++) (i % 20 === 0 ? keep : junk).push({ i, s: `x${i}`, a: [i] });
    collect!();
    expect(junk.length).toBeGreaterThan(0);
    junk = null;
    const before = oldSpace();
    collect!();
    expect(keep.length).toBe(30_000);
    // The junk was some 60 MB; other suites in this process keep theirs, so count what was given back.
    expect(before - oldSpace()).toBeGreaterThan(40 * MiB);
  });
});
