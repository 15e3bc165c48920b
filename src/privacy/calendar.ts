/**
 * The calendar arithmetic behind every date a researcher sees shifted (PS3.15 E.3.6, DICOM and
 * FHIR alike): one implementation, so a patient's DICOM and FHIR dates move identically.
 */

const DAY_MS = 86_400_000;

/** Year (1-9999), month (1-12) and day of a calendar date. */
export type CalendarDay = [year: number, month: number, day: number];

/** The UTC calendar day `days` after year/month/day, or null when the input is not a real day or the result leaves years 1-9999. */
export function addDaysToDate(year: number, month: number, day: number, days: number): CalendarDay | null {
  if (!Number.isInteger(days) || month < 1 || month > 12 || day < 1) return null;
  const start = new Date(0);
  start.setUTCFullYear(year, month - 1, day); // not Date.UTC, which maps years 0-99 to 1900-1999
  // An impossible day (2023-02-31) is not a date.
  if (start.getUTCFullYear() !== year || start.getUTCMonth() !== month - 1 || start.getUTCDate() !== day) return null;
  const moved = new Date(start.getTime() + days * DAY_MS);
  const y = moved.getUTCFullYear();
  if (y < 1 || y > 9999) return null;
  return [y, moved.getUTCMonth() + 1, moved.getUTCDate()];
}
