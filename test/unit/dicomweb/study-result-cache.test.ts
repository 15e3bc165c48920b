import type { StudyJsonVersion } from '../../../src/db/qido-search';
import { StudyResultCache } from '../../../src/dicomweb/study-result-cache';

/** A study's result text at a revision, ~`size` bytes long. */
function version(id: string, rev: string, size = 100): StudyJsonVersion {
  const json = `{"00081190": {"vr": "UR"}, "00081030": {"vr": "LO", "Value": ["${'x'.repeat(Math.max(0, size - 60))}"]}}`;
  return { id, rev, study_uid: `1.2.${id}`, json };
}

describe('StudyResultCache', () => {
  test('a kept result is found at its revision only', () => {
    const cache = new StudyResultCache(1 << 20);
    const kept = cache.add([version('7', '3')])[0];
    expect(cache.get('7', '3')).toBe(kept);
    expect(cache.get('7', '4')).toBeUndefined();
    expect(cache.get('8', '3')).toBeUndefined();
    expect(cache.stats()).toMatchObject({ hits: 1, misses: 2, entries: 1 });
  });

  test('a newer revision replaces the older one', () => {
    const cache = new StudyResultCache(1 << 20);
    cache.add([version('7', '3')])[0];
    const newer = cache.add([version('7', '4', 200)])[0];
    expect(cache.get('7', '3')).toBeUndefined();
    expect(cache.get('7', '4')).toBe(newer);
    expect(cache.stats().entries).toBe(1);
  });

  test('the least recently used results go once the cap is passed', () => {
    // Room for four results of the same size.
    const entryBytes = (() => {
      const probe = new StudyResultCache(1 << 20);
      probe.add([version('1', '0', 1000)]);
      return probe.stats().bytes;
    })();
    const cache = new StudyResultCache(4 * entryBytes);
    for (let id = 1; id <= 4; id++) cache.add([version(String(id), '0', 1000)]);
    expect(cache.stats()).toMatchObject({ evictions: 0, entries: 4 });
    // Study 1 is used again: study 2 is now the least recently used.
    expect(cache.get('1', '0')).toBeDefined();
    cache.add([version('5', '0', 1000)]);
    const { bytes, evictions, entries } = cache.stats();
    expect({ evictions, entries }).toEqual({ evictions: 1, entries: 4 });
    expect(bytes).toBeLessThanOrEqual(4 * entryBytes);
    expect(cache.get('2', '0')).toBeUndefined();
    for (const id of ['1', '3', '4', '5']) expect(cache.get(id, '0')).toBeDefined();
  });

  test('pages are expected to find their results kept once recent pages did, and no longer once they do not', () => {
    const cache = new StudyResultCache(1 << 20);
    expect(cache.expectsHits()).toBe(false);
    cache.notePage(100, 0, 100);
    expect(cache.expectsHits()).toBe(false);
    cache.notePage(100, 0, 0);
    expect(cache.expectsHits()).toBe(false);
    for (let i = 0; i < 5; i++) cache.notePage(100, 0, 0);
    expect(cache.expectsHits()).toBe(true);
    for (let i = 0; i < 3; i++) cache.notePage(100, 100, 100);
    expect(cache.expectsHits()).toBe(false);
    expect(cache.stats().textsRead).toBe(400);
  });

  test('with a cap of 0 nothing is kept, yet the result is made', () => {
    const cache = new StudyResultCache(0);
    const made = cache.add([version('7', '3')])[0];
    expect(made.memory.toString('utf8', made.start, made.end)).toBe(version('7', '3').json);
    expect(cache.get('7', '3')).toBeUndefined();
    expect(cache.stats()).toMatchObject({ entries: 0, bytes: 0 });
  });

  test('a result larger than a quarter of the cap is not kept', () => {
    const cache = new StudyResultCache(4 * 1024);
    cache.add([version('7', '3', 2000)])[0];
    expect(cache.stats().entries).toBe(0);
  });

  test('the results read together share one block of memory of their own, counted once while one of them is kept', () => {
    const cache = new StudyResultCache(1 << 20);
    const made = cache.add([version('1', '0', 1000), version('2', '0', 1000)]);
    expect(made[0].memory).toBe(made[1].memory);
    // Each text is followed by a comma.
    expect(made[0].memory.buffer.byteLength).toBe(made[0].end - made[0].start + made[1].end - made[1].start + 2);
    expect(made[1].memory.toString('utf8', made[1].start, made[1].end)).toBe(version('2', '0', 1000).json);
    const both = cache.stats().bytes;
    cache.add([version('1', '1', 1000)]);
    // Study 1's new text has a block of its own; study 2 still holds the first block whole.
    expect(cache.stats().bytes - both).toBeGreaterThanOrEqual(1000);
    cache.add([version('2', '1', 1000)]);
    expect(cache.stats().bytes).toBeLessThan(both + 1000);
  });

  test('texts read under a RetrieveURL head are kept with their RetrieveURL written, as stored otherwise', () => {
    const cache = new StudyResultCache(1 << 20);
    const head = '"00081190": {"vr": "UR", "Value": ["http://h/dicomweb/studies/';
    const [finished, odd] = cache.add([version('1', '0'), { ...version('2', '0'), study_uid: '1.2 x' }], head);
    expect(finished.memory.toString('utf8', finished.start, finished.end)).toBe(version('1', '0').json.replace('"00081190": {"vr": "UR"}', `${head}1.2.1"]}`));
    expect(finished.memory.toString('utf8', finished.urlAt, finished.urlEnd)).toBe(`${head}1.2.1"]}`);
    // A UID to percent-encode: kept as stored, finished per answer.
    expect(odd.head).toBeUndefined();
    expect(odd.urlAt).toBe(-1);
    expect(odd.memory.toString('utf8', odd.start, odd.end)).toBe(version('2', '0').json);
    expect(cache.get('1', '0')).toBe(finished);
  });
});
