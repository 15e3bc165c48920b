import { encodeUtf8, responseBuffers } from '../../../src/dicomweb/qido-routes';

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

describe('responseBuffers', () => {
  test('a buffer taken is not handed out again until given back; then it serves a later answer', () => {
    const first = responseBuffers.take(100_000);
    const second = responseBuffers.take(100_000);
    expect(second).not.toBe(first);
    expect(first.length).toBeGreaterThanOrEqual(100_000);
    responseBuffers.give(first);
    responseBuffers.give(first);
    const third = responseBuffers.take(10);
    expect(third).toBe(first);
    expect(responseBuffers.take(10)).not.toBe(first);
    responseBuffers.give(second);
    responseBuffers.give(third);
  });

  test('a buffer is at least as large as asked', () => {
    const big = responseBuffers.take(5 << 20);
    expect(big.length).toBeGreaterThanOrEqual(5 << 20);
    responseBuffers.give(big);
  });
});
