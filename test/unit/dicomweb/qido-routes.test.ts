import { encodeUtf8, writeAsciiPieces } from '../../../src/dicomweb/qido-routes';

/** QIDO-RS answers are DICOM JSON in UTF-8 (PS3.18 F.2, 8.3.5: application/dicom+json is UTF-8). */
describe('encodeUtf8', () => {
  test('an ASCII text gives its bytes as they are', () => {
    const text = `[${JSON.stringify({ '00100010': { vr: 'PN', Value: [{ Alphabetic: 'DOE^JOHN' }] } })}]`;
    expect(encodeUtf8(text).equals(Buffer.from(text, 'utf8'))).toBe(true);
  });

  test('a text with characters outside ASCII is UTF-8 encoded (accents, CJK, a surrogate pair)', () => {
    for (const name of ['Buc^Jérôme', 'Äneas^Rüdiger', 'やまだ^たろう', 'Yamada^Tarou=山田^太郎', 'x\u{1F600}y', '\u00ff']) {
      const text = JSON.stringify([{ '00100010': { vr: 'PN', Value: [{ Alphabetic: name }] } }]);
      const bytes = encodeUtf8(text);
      expect(bytes.equals(Buffer.from(text, 'utf8'))).toBe(true);
      expect(bytes.toString('utf8')).toBe(text);
    }
  });

  test('an empty answer is two bytes', () => {
    expect(encodeUtf8('[]').toString('latin1')).toBe('[]');
  });
});

describe('writeAsciiPieces', () => {
  test('the pieces are copied one after the other', () => {
    const pieces = ['[', '{"a": 1}', ',', '{"b": "x"}', ']'];
    const body = writeAsciiPieces(pieces);
    expect(body.bytes.toString('latin1')).toBe(pieces.join(''));
    body.release();
  });

  test('an answer not yet sent keeps its bytes while later answers are written; a sent one lends its buffer', () => {
    const first = writeAsciiPieces(['[', 'x'.repeat(1000), ']']);
    const second = writeAsciiPieces(['[', 'y'.repeat(1000), ']']);
    expect(first.bytes.toString('latin1')).toBe(`[${'x'.repeat(1000)}]`);
    expect(second.bytes.toString('latin1')).toBe(`[${'y'.repeat(1000)}]`);
    first.release();
    first.release();
    const third = writeAsciiPieces(['z'.repeat(10)]);
    expect(third.bytes.buffer).toBe(first.bytes.buffer);
    expect(third.bytes.toString('latin1')).toBe('z'.repeat(10));
    expect(second.bytes.toString('latin1')).toBe(`[${'y'.repeat(1000)}]`);
    second.release();
    third.release();
  });
});
