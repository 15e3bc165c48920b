/**
 * Value rules of de-identification: date shifting for the Modified Dates Option (PS3.15 E.3.6)
 * keeps exact intervals across month, year and leap-day boundaries; DT keeps its time and UTC
 * offset; ranges stay ranges; what is not a date is dropped; ages over 89 are capped.
 */
import { capAge, cleanText, IdentifyingTokens, shiftDate, shiftDateTime, shiftYmd } from '../../../src/dicom/deidentify-values';
import { formatDecimal } from '../../../src/dicom/deidentify-encode';

function daysBetween(a: string, b: string): number {
  const t = (s: string) => Date.UTC(Number(s.slice(0, 4)), Number(s.slice(4, 6)) - 1, Number(s.slice(6, 8)));
  return (t(b) - t(a)) / 86_400_000;
}

describe('date shifting (PS3.15 E.3.6)', () => {
  test.each([
    ['20240228', 1, '20240229'],
    ['20240229', 1, '20240301'],
    ['20230228', 1, '20230301'],
    ['20231231', 1, '20240101'],
    ['20240301', -1, '20240229'],
    ['19000301', -1, '19000228'], // 1900 is not a leap year
    ['20000301', -1, '20000229'], // 2000 is
    ['20200615', -365, '20190616'],
  ])('%s shifted by %i days is %s', (date, days, expected) => {
    expect(shiftYmd(date, days)).toBe(expected);
  });

  test('the interval between two dates of one patient is exactly preserved, whatever the offset', () => {
    const dates = ['19991231', '20000229', '20040101', '20121015', '20240229'];
    for (const offset of [-365, -200, -1, 1, 59, 366]) {
      for (const a of dates) {
        for (const b of dates) {
          expect(daysBetween(shiftYmd(a, offset)!, shiftYmd(b, offset)!)).toBe(daysBetween(a, b));
        }
        expect(daysBetween(a, shiftYmd(a, offset)!)).toBe(offset);
      }
    }
  });

  test('DA ranges stay ranges and legacy dotted dates are read; non-dates are dropped', () => {
    expect(shiftDate('20200101-20200131', 10)).toBe('20200111-20200210');
    expect(shiftDate('-20200131', 10)).toBe('-20200210');
    expect(shiftDate('20200101-', -10)).toBe('20191222-');
    expect(shiftDate('2020.01.01', 1)).toBe('20200102');
    expect(shiftDate('PHI_SENTINEL', 1)).toBeNull();
    expect(shiftDate('20230231', 1)).toBeNull();
    expect(shiftDate('', 1)).toBe('');
  });

  test('DT keeps its time, fraction and UTC offset; partial precision is kept', () => {
    expect(shiftDateTime('20200229235959.123456+0100', 1)).toBe('20200301235959.123456+0100');
    expect(shiftDateTime('20200101120000-0500', -1)).toBe('20191231120000-0500');
    expect(shiftDateTime('20200101', 31)).toBe('20200201');
    expect(shiftDateTime('202001', 40)).toBe('202002');
    expect(shiftDateTime('2020', 400)).toBe('2021');
    expect(shiftDateTime('20200101-20200102', 1)).toBe('20200102-20200103');
    expect(shiftDateTime('20200101120000-0500-20200102', 1)).toBe('20200102120000-0500-20200103');
    expect(shiftDateTime('2020-2021', 1)).toBe('2020-2021');
    expect(shiftDateTime('not a date', 1)).toBeNull();
  });
});

describe('patient characteristics', () => {
  test('ages over 89 become 090Y; malformed ages are dropped', () => {
    expect(capAge('090Y')).toBe('090Y');
    expect(capAge('089Y')).toBe('089Y');
    expect(capAge('112Y')).toBe('090Y');
    expect(capAge('006M')).toBe('006M');
    expect(capAge('12Y')).toBeNull();
  });
});

describe('Clean Descriptors (PS3.15 E.3.11)', () => {
  test('drops words holding identifying tokens, long digit runs and e-mail addresses', () => {
    const tokens = new IdentifyingTokens();
    tokens.add('DOE^JANE');
    tokens.add('MRN-0042');
    expect(cleanText('Follow-up for Jane DOE, mrn-0042: brain MRI', tokens)).toBe('Follow-up for brain MRI');
    expect(cleanText('scan 2021 call 555-1234 or x@y.org', tokens)).toBe('scan call or');
    expect(cleanText('Pédiatrie T2', tokens)).toBe('T2');
  });
});

describe('DS formatting', () => {
  test('fits 16 characters', () => {
    expect(formatDecimal(1.5)).toBe('1.5');
    expect(formatDecimal(1e21).length).toBeLessThanOrEqual(16);
    expect(Number(formatDecimal(0.1 + 0.2))).toBeCloseTo(0.3, 10);
    expect(formatDecimal(0.1 + 0.2).length).toBeLessThanOrEqual(16);
  });
});
