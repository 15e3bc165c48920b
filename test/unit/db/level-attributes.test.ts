import { jsonWithoutNul } from '../../../src/db/level-attributes';

describe('jsonWithoutNul', () => {
  test('drops U+0000 from every string, nested too', () => {
    const json = jsonWithoutNul({ a: { vr: 'LO', Value: ['x\u0000y'] }, b: [{ c: '\u0000' }] });
    expect(json).not.toContain('\\u0000');
    expect(JSON.parse(json)).toEqual({ a: { vr: 'LO', Value: ['xy'] }, b: [{ c: '' }] });
  });

  test('keeps a literal backslash-u0000 text (not a NUL) as it is', () => {
    const value = { a: 'C:\\u0000' };
    expect(JSON.parse(jsonWithoutNul(value))).toEqual(value);
  });

  test('is JSON.stringify when there is no NUL', () => {
    const value = { '0020000D': { vr: 'UI', Value: ['1.2.3'] }, n: 5 };
    expect(jsonWithoutNul(value)).toBe(JSON.stringify(value));
  });
});
