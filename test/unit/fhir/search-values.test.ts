import {
  parseDateValue,
  parseNumberValue,
  parseQuantityValue,
  parseReferenceValue,
  parseTokenValue,
  splitOnUnescaped,
  splitPrefix,
  unescapeValue,
} from '../../../src/fhir/search/search-values';
import { OperationOutcomeError } from '../../../src/fhir/outcome';

describe('search value parsing (FHIR R4 3.1.1.4-6)', () => {
  test('splits a comma list but keeps escaped commas', () => {
    expect(splitOnUnescaped('a,b\\,c,d', ',')).toEqual(['a', 'b\\,c', 'd']);
  });

  test('unescapes \\, \\| \\$ and \\\\', () => {
    expect(unescapeValue('a\\,b\\|c\\$d\\\\e')).toBe('a,b|c$d\\e');
  });

  test.each(['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap'])('reads the %s prefix', (p) => {
    expect(splitPrefix(`${p}2013-01-14`)).toEqual({ prefix: p, rest: '2013-01-14' });
  });

  test('defaults to eq and does not take letters of a value as a prefix', () => {
    expect(splitPrefix('2013')).toEqual({ prefix: 'eq', rest: '2013' });
    expect(splitPrefix('gtx')).toEqual({ prefix: 'eq', rest: 'gtx' });
  });

  test('a number carries its implicit precision range: 100 is [99.5, 100.5)', () => {
    const v = parseNumberValue('100', 'n');
    expect([v.prefix, v.value, v.low, v.high]).toEqual(['eq', 100, 99.5, 100.5]);
  });

  test('more decimals narrow the range: 5.40 is [5.395, 5.405)', () => {
    const v = parseNumberValue('gt5.40', 'n');
    expect(v.prefix).toBe('gt');
    expect(v.low).toBeCloseTo(5.395, 10);
    expect(v.high).toBeCloseTo(5.405, 10);
  });

  test('a malformed number is a 400 naming the parameter', () => {
    try {
      parseNumberValue('abc', 'probability');
      throw new Error('expected a throw');
    } catch (e) {
      expect(e).toBeInstanceOf(OperationOutcomeError);
      expect((e as OperationOutcomeError).status).toBe(400);
      expect((e as OperationOutcomeError).message).toMatch(/probability/);
    }
  });

  test('a quantity splits into number, system and code', () => {
    const q = parseQuantityValue('le5.4|http://unitsofmeasure.org|mg', 'value-quantity');
    expect([q.prefix, q.value, q.system, q.code]).toEqual(['le', 5.4, 'http://unitsofmeasure.org', 'mg']);
  });

  test('a quantity with only a code: 5.4||mg', () => {
    const q = parseQuantityValue('5.4||mg', 'value-quantity');
    expect([q.system, q.code]).toEqual([undefined, 'mg']);
  });

  test('token forms: system|code, |code, system|, code', () => {
    expect(parseTokenValue('http://loinc.org|1234-5')).toEqual({ system: 'http://loinc.org', code: '1234-5' });
    expect(parseTokenValue('|1234-5')).toEqual({ system: null, code: '1234-5' });
    expect(parseTokenValue('http://loinc.org|')).toEqual({ system: 'http://loinc.org', code: undefined });
    expect(parseTokenValue('1234-5')).toEqual({ code: '1234-5' });
  });

  test('a token code may contain an escaped pipe', () => {
    expect(parseTokenValue('sys|a\\|b')).toEqual({ system: 'sys', code: 'a|b' });
  });

  test('references: Type/id, id, versioned, absolute ours and foreign', () => {
    expect(parseReferenceValue('Patient/123')).toEqual({ type: 'Patient', id: '123' });
    expect(parseReferenceValue('123')).toEqual({ id: '123' });
    expect(parseReferenceValue('Patient/123/_history/4')).toEqual({ type: 'Patient', id: '123' });
    expect(parseReferenceValue('http://me/fhir/Patient/9', 'http://me/fhir')).toEqual({ type: 'Patient', id: '9' });
    expect(parseReferenceValue('http://other/fhir/Patient/9', 'http://me/fhir')).toEqual({ url: 'http://other/fhir/Patient/9' });
  });

  test('a date value keeps prefix and range', () => {
    const d = parseDateValue('ge2013-01', 'date');
    expect(d.prefix).toBe('ge');
    expect(new Date(d.range.low).toISOString()).toBe('2013-01-01T00:00:00.000Z');
    expect(new Date(d.range.high).toISOString()).toBe('2013-02-01T00:00:00.000Z');
  });

  test('a malformed date is a 400', () => {
    expect(() => parseDateValue('2013-13-01', 'birthdate')).toThrow(/Invalid date value '2013-13-01' for parameter birthdate/);
  });
});

describe('dates in URLs', () => {
  test('a time zone + that URL decoding turned into a space is read as +', () => {
    const d = parseDateValue('ge2013-01-14T10:00:00 02:00', 'date');
    expect(new Date(d.range.low).toISOString()).toBe('2013-01-14T08:00:00.000Z');
  });
});

describe('prefixUpperBound (token :below as a byte-order range)', () => {
  const { prefixUpperBound } = require('../../../src/fhir/search/search-sql');
  test('ICD-10 prefix H47.01 ends before H47.02', () => {
    expect(prefixUpperBound('H47.01')).toBe('H47.02');
  });
  test('non-ASCII or empty prefixes fall back to LIKE (null)', () => {
    expect(prefixUpperBound('aé')).toBeNull();
    expect(prefixUpperBound('')).toBeNull();
  });
});
