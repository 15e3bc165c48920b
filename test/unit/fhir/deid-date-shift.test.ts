import { ageInYears, shiftFhirDate } from '../../../src/fhir/deid/date-shift';

/** Date shifting of de-identified views: exact calendar arithmetic at the value's own precision. */
describe('shiftFhirDate', () => {
  test('a date moves by whole calendar days across month, year and leap-day boundaries', () => {
    expect(shiftFhirDate('2024-02-28', 1)).toBe('2024-02-29');
    expect(shiftFhirDate('2024-02-28', 2)).toBe('2024-03-01');
    expect(shiftFhirDate('2023-12-31', 1)).toBe('2024-01-01');
    expect(shiftFhirDate('2024-03-01', -366)).toBe('2023-03-01');
  });

  test('a dateTime keeps its time, fraction and zone, so the instant moves by exactly N x 24 h', () => {
    const shifted = shiftFhirDate('2021-03-27T23:30:15.250+01:00', 10);
    expect(shifted).toBe('2021-04-06T23:30:15.250+01:00');
    expect(Date.parse(shifted as string) - Date.parse('2021-03-27T23:30:15.250+01:00')).toBe(10 * 86_400_000);
    expect(shiftFhirDate('2020-01-01T00:00:00Z', -1)).toBe('2019-12-31T00:00:00Z');
  });

  test('intervals between two values of one patient are preserved exactly', () => {
    const a = '2019-11-03T08:15:00Z';
    const b = '2024-02-29T17:45:30Z';
    for (const days of [-365, -41, 1, 200, 365]) {
      const sa = shiftFhirDate(a, days) as string;
      const sb = shiftFhirDate(b, days) as string;
      expect(Date.parse(sb) - Date.parse(sa)).toBe(Date.parse(b) - Date.parse(a));
    }
  });

  test('year and month precision are kept: the middle of the period decides where it lands', () => {
    expect(shiftFhirDate('2020', -10)).toBe('2020');
    expect(shiftFhirDate('2020', 200)).toBe('2021');
    expect(shiftFhirDate('2020', -200)).toBe('2019');
    expect(shiftFhirDate('2020-03', 5)).toBe('2020-03');
    expect(shiftFhirDate('2020-03', 20)).toBe('2020-04');
    expect(shiftFhirDate('2020-01', -20)).toBe('2019-12');
  });

  test('values that are not FHIR dates are not shifted (undefined: the caller removes them)', () => {
    expect(shiftFhirDate('2020-02-30', 1)).toBeUndefined();
    expect(shiftFhirDate('yesterday', 1)).toBeUndefined();
    expect(shiftFhirDate('2020-01-01Tnoon', 1)).toBeUndefined();
    expect(shiftFhirDate('2020-01-01', 1.5)).toBeUndefined();
  });
});

describe('ageInYears', () => {
  test('counts whole years, the birthday not yet reached not counting', () => {
    const on = new Date('2026-06-15T00:00:00Z');
    expect(ageInYears('1936-06-15', on)).toBe(90);
    expect(ageInYears('1936-06-16', on)).toBe(89);
    expect(ageInYears('1936', on)).toBe(90);
    expect(ageInYears('not a date', on)).toBeUndefined();
  });
});
