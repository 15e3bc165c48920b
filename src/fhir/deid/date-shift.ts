/**
 * Date shifting for de-identified views (PS3.15 E.3.6 "Retain Longitudinal Temporal Information
 * with Modified Dates", applied to FHIR R4 date, dateTime and instant values, FHIR R4 datatypes
 * 2.24.0.1). Every value of one patient moves by the same whole number of days, by exact
 * calendar arithmetic, and keeps its precision:
 *
 * - a date, or a dateTime/instant with a time, moves its calendar day by `days`; the time of day,
 *   fraction and zone are kept as written, so the instant moves by exactly `days` x 24 h and the
 *   interval between two values of one patient is preserved to the millisecond;
 * - a value of month precision (`2020-03`) becomes the month holding the 15th of its month
 *   shifted by `days`; a value of year precision (`2020`) the year holding its 2 July (mid-year)
 *   shifted by `days`. Choice: shifting the middle of the period, not its first day, moves a
 *   coarse value only when the offset really carries most of it into another month or year, so
 *   it stays the closest value of its own precision to the shifted truth (intervals between
 *   coarse values are preserved to within their precision; whole-year shifts would move every
 *   year-only value, and first-day shifts would move every one by a negative offset).
 */

import { addDaysToDate } from '../../privacy/calendar';

const FHIR_DATE = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(T.*)?)?)?$/;

const pad = (n: number, width: number) => String(n).padStart(width, '0');

/**
 * A FHIR date, dateTime or instant moved by `days` at its own precision; undefined when the
 * value is not a FHIR date (callers remove it: a value that cannot be shifted is not shown).
 */
export function shiftFhirDate(value: string, days: number): string | undefined {
  if (typeof value !== 'string' || !Number.isInteger(days)) return undefined;
  const m = FHIR_DATE.exec(value);
  if (!m) return undefined;
  const [, y, mo, d, rest] = m;
  const year = Number(y);
  if (mo === undefined) {
    const moved = addDaysToDate(year, 7, 2, days);
    return moved ? pad(moved[0], 4) : undefined;
  }
  const month = Number(mo);
  if (d === undefined) {
    const moved = addDaysToDate(year, month, 15, days);
    return moved ? `${pad(moved[0], 4)}-${pad(moved[1], 2)}` : undefined;
  }
  if (rest !== undefined && !/^T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?$/.test(rest)) return undefined;
  const moved = addDaysToDate(year, month, Number(d), days);
  return moved ? `${pad(moved[0], 4)}-${pad(moved[1], 2)}-${pad(moved[2], 2)}${rest ?? ''}` : undefined;
}

/**
 * Whole years between a FHIR birth date and `on` (the birthday not yet reached counts as not a
 * year); undefined when the birth date is not a FHIR date. A year-only or month-only birth date
 * is taken at its earliest day, giving the oldest possible age (safe for the over-89 rule).
 */
export function ageInYears(birthDate: string, on: Date): number | undefined {
  const m = FHIR_DATE.exec(birthDate);
  if (!m) return undefined;
  const year = Number(m[1]);
  const month = m[2] ? Number(m[2]) : 1;
  const day = m[3] ? Number(m[3]) : 1;
  let age = on.getUTCFullYear() - year;
  const beforeBirthday = on.getUTCMonth() + 1 < month || (on.getUTCMonth() + 1 === month && on.getUTCDate() < day);
  if (beforeBirthday) age -= 1;
  return age;
}
