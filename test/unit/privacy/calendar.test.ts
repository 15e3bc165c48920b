import { addDaysToDate } from '../../../src/privacy/calendar';
import { shiftYmd } from '../../../src/dicom/deidentify-values';
import { shiftFhirDate } from '../../../src/fhir/deid/date-shift';

describe('one calendar for DICOM and FHIR date shifting', () => {
  test('crosses month, leap day and year boundaries exactly', () => {
    expect(addDaysToDate(2024, 2, 28, 1)).toEqual([2024, 2, 29]);
    expect(addDaysToDate(2023, 2, 28, 1)).toEqual([2023, 3, 1]);
    expect(addDaysToDate(2024, 12, 31, 1)).toEqual([2025, 1, 1]);
    expect(addDaysToDate(2025, 1, 1, -365)).toEqual([2024, 1, 2]);
  });

  test('refuses impossible days and results outside years 1-9999', () => {
    expect(addDaysToDate(2023, 2, 31, 0)).toBeNull();
    expect(addDaysToDate(2023, 13, 1, 0)).toBeNull();
    expect(addDaysToDate(9999, 12, 31, 1)).toBeNull();
    expect(addDaysToDate(2023, 1, 1, 0.5)).toBeNull();
  });

  test.each([-365, -1, 1, 59, 365])('a patient date moves the same way in DICOM and FHIR (%i days)', (days) => {
    for (const [dicom, fhir] of [['20240229', '2024-02-29'], ['19991231', '1999-12-31'], ['20230101', '2023-01-01']]) {
      expect(shiftFhirDate(fhir, days)).toBe(shiftYmd(dicom, days)!.replace(/^(\d{4})(\d{2})(\d{2})$/, '$1-$2-$3'));
    }
  });
});
