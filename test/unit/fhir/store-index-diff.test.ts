import { diffIndexRows, type StoredIndexRow } from '../../../src/fhir/store/index-diff';
import type { IndexRows } from '../../../src/fhir/store/index-rows';

const empty = (): IndexRows => ({ token: [], string: [], date: [], number: [], reference: [], uri: [] });
const stored = (t: number, c: string, r: string, values: Array<string | null>): StoredIndexRow => {
  const [p, a = null, b = null, d = null, e = null] = values;
  return { t, c, r, p: p as string, a, b, d, e };
};

describe('diffIndexRows', () => {
  test('keeps rows present on both sides, inserts new ones, marks the rest stale', () => {
    const next = empty();
    next.token.push({ param: 'status', system: null, code: 'final', text: null });
    next.token.push({ param: 'code', system: 'http://loinc.org', code: '1-1', text: null });
    const old = [stored(0, '(0,1)', '7', ['status', null, 'final', null]), stored(0, '(0,2)', '7', ['status', null, 'preliminary', null])];
    const diff = diffIndexRows(old, new Map([['7', next]]));
    expect(diff.fresh.get('7')?.token).toEqual([{ param: 'code', system: 'http://loinc.org', code: '1-1', text: null }]);
    expect(diff.stale.get('fhir_token')).toEqual(['(0,2)']);
  });

  test('matching is per resource: an equal row of another rid does not count', () => {
    const next = empty();
    next.uri.push({ param: 'url', value: 'http://x' });
    const diff = diffIndexRows([stored(5, '(1,1)', '8', ['url', 'http://x'])], new Map([['7', next]]));
    expect(diff.fresh.get('7')?.uri).toHaveLength(1);
    expect(diff.stale.get('fhir_uri')).toEqual(['(1,1)']);
  });

  test('a stored duplicate is stale; null and empty text differ', () => {
    const next = empty();
    next.token.push({ param: 'status', system: null, code: 'final', text: null });
    next.string.push({ param: 'name', value: '', exact: '' });
    const old = [
      stored(0, '(0,1)', '1', ['status', null, 'final', null]),
      stored(0, '(0,2)', '1', ['status', null, 'final', null]),
      stored(0, '(0,3)', '1', ['status', '', 'final', null]),
    ];
    const diff = diffIndexRows(old, new Map([['1', next]]));
    expect(diff.fresh.get('1')?.token).toEqual([]);
    expect(diff.fresh.get('1')?.string).toHaveLength(1);
    const stale = diff.stale.get('fhir_token') ?? [];
    // One of the two equal rows stays (either one), the other and the '' system row go.
    expect(stale).toHaveLength(2);
    expect(stale).toContain('(0,3)');
    expect(stale.filter((c) => c === '(0,1)' || c === '(0,2)')).toHaveLength(1);
  });

  test('dates and numbers compare in their stored text form', () => {
    const next = empty();
    next.date.push({ param: 'date', low: '2024-05-01T08:00:00.250Z', high: 'infinity' });
    next.number.push({ param: 'length', low: '1.5', high: '1.5', system: 'http://unitsofmeasure.org', code: 'h' });
    const old = [
      stored(2, '(0,1)', '3', ['date', '2024-05-01T08:00:00.250Z', 'infinity']),
      stored(3, '(0,2)', '3', ['length', '1.5', '1.5', 'http://unitsofmeasure.org', 'h']),
    ];
    const diff = diffIndexRows(old, new Map([['3', next]]));
    expect(diff.fresh.get('3')).toEqual(empty());
    expect(diff.stale.size).toBe(0);
  });
});
