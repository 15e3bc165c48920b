import { parseDateRange, toTimestamp } from '../../../src/fhir/search/date-range';

const iso = (ms: number) => new Date(ms).toISOString();
const range = (text: string) => {
  const r = parseDateRange(text);
  return r ? [iso(r.low), iso(r.high)] : undefined;
};

describe('implicit date ranges [low, high) (FHIR R4 3.1.1.4.6)', () => {
  test('a year is the whole year', () => {
    expect(range('2013')).toEqual(['2013-01-01T00:00:00.000Z', '2014-01-01T00:00:00.000Z']);
  });
  test('a December month ends at the next year', () => {
    expect(range('2013-12')).toEqual(['2013-12-01T00:00:00.000Z', '2014-01-01T00:00:00.000Z']);
  });
  test('a day is 24 hours', () => {
    expect(range('2020-02-29')).toEqual(['2020-02-29T00:00:00.000Z', '2020-03-01T00:00:00.000Z']);
  });
  test('minutes precision is one minute', () => {
    expect(range('2013-01-14T10:00Z')).toEqual(['2013-01-14T10:00:00.000Z', '2013-01-14T10:01:00.000Z']);
  });
  test('a time zone offset is applied', () => {
    expect(range('2013-01-14T10:00:00+02:00')).toEqual(['2013-01-14T08:00:00.000Z', '2013-01-14T08:00:01.000Z']);
  });
  test('milliseconds precision is one millisecond', () => {
    expect(range('2013-01-14T10:00:00.123Z')).toEqual(['2013-01-14T10:00:00.123Z', '2013-01-14T10:00:00.124Z']);
  });
  test('an impossible calendar date is rejected', () => {
    expect(parseDateRange('2019-02-29')).toBeUndefined();
    expect(parseDateRange('2019-00-10')).toBeUndefined();
    expect(parseDateRange('yesterday')).toBeUndefined();
  });
  test('open bounds become PostgreSQL infinities', () => {
    expect(toTimestamp(Number.NEGATIVE_INFINITY)).toBe('-infinity');
    expect(toTimestamp(Number.POSITIVE_INFINITY)).toBe('infinity');
  });
});
