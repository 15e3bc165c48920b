import { parseStudyPageKeys } from '../../../src/db/qido-search';

describe('the keys of a study page by date, read as one text', () => {
  test('an empty page has no keys', () => {
    expect(parseStudyPageKeys('')).toEqual({ ids: [], revs: [] });
  });

  test('ids and revisions come in the text’s order, as numbers', () => {
    expect(parseStudyPageKeys('912:0,7:3,100003:12')).toEqual({ ids: [912, 7, 100003], revs: [0, 3, 12] });
  });

  test('bigint ids past 2^31 are exact', () => {
    expect(parseStudyPageKeys('4294967297:2147483648')).toEqual({ ids: [4294967297], revs: [2147483648] });
  });

  test('a text that is not digits, colons and commas is refused', () => {
    expect(() => parseStudyPageKeys('7:3,-1:0')).toThrow(/unexpected character "-"/);
  });
});
