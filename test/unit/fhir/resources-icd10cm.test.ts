import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_ICD10CM_CODES_PATH, loadIcd10cmCodes, parseCodeList } from '../../../src/fhir/resources/icd10cm-codes';

describe('ICD-10-CM code list', () => {
  const shipped = loadIcd10cmCodes();

  test('the shipped FY2021 list holds every code of the CMS file, headers included', () => expect(shipped.size).toBe(95358));
  test('a billable code is known and not a header', () => {
    expect(shipped.has('H47.011')).toBe(true);
    expect(shipped.isHeader('H47.011')).toBe(false);
  });
  test('a category header is known and flagged', () => {
    expect(shipped.has('H47.01')).toBe(true);
    expect(shipped.isHeader('H47.01')).toBe(true);
  });
  test('a seven-character code with its dot is known', () => expect(shipped.has('H40.1131')).toBe(true));
  test('the dotless CMS spelling is not a FHIR code', () => expect(shipped.has('H47011')).toBe(false));
  test('suggest names the dotted form of a dotless or lower-case code', () => {
    expect(shipped.suggest('H47011')).toBe('H47.011');
    expect(shipped.suggest('h40.1131')).toBe('H40.1131');
  });
  test('suggest answers nothing for a code that is not in any spelling', () => expect(shipped.suggest('H99999')).toBeUndefined());
  test('the same path is loaded once per process', () => expect(loadIcd10cmCodes(DEFAULT_ICD10CM_CODES_PATH)).toBe(shipped));

  test('the shared TSV format (header row, billable column) parses too', () => {
    const set = parseCodeList('code\tbillable\tshort_description\nH47.01\t0\tIschemic optic neuropathy\nH47.011\t1\tIschemic optic neuropathy, right eye\n');
    expect([set.size, set.has('code'), set.isHeader('H47.01'), set.isHeader('H47.011')]).toEqual([2, false, true, false]);
  });

  test('a missing file throws naming the path', () => {
    const missing = path.join(os.tmpdir(), 'no-such-icd10cm-list.txt');
    expect(() => loadIcd10cmCodes(missing)).toThrow(`ICD-10-CM code list ${missing} cannot be read`);
  });

  test('an empty file throws: no codes', () => {
    const empty = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'icd-')), 'empty.txt');
    fs.writeFileSync(empty, '\n');
    expect(() => loadIcd10cmCodes(empty)).toThrow('holds no codes');
  });
});
