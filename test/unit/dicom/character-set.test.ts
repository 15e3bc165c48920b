/**
 * Text decoding per Specific Character Set (PS3.5 6.1, PS3.3 C.12.1.1.2), checked against the
 * pydicom/Clunie charset samples (expected names from pydicom-charset__FileInfo.txt) and on
 * hand-made byte strings for the sets without a sample file.
 */
import { createTextDecoder } from '../../../src/dicom/character-set';
import { readShared, scanBytes } from './dicom-fixtures';

describe('charset sample files', () => {
  it.each([
    ['chrArab.dcm', 'ISO_IR 127', 'قباني^لنزار'],
    ['chrFren.dcm', 'ISO_IR 100', 'Buc^Jérôme'],
    ['chrGerm.dcm', 'ISO_IR 100', 'Äneas^Rüdiger'],
    ['chrGreek.dcm', 'ISO_IR 126', 'Διονυσιος'],
    ['chrH31.dcm', '\\ISO 2022 IR 87', 'Yamada^Tarou=山田^太郎=やまだ^たろう'],
    ['chrH32.dcm', 'ISO 2022 IR 13\\ISO 2022 IR 87', 'ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう'],
    ['chrHbrw.dcm', 'ISO_IR 138', 'שרון^דבורה'],
    ['chrI2.dcm', '\\ISO 2022 IR 149', 'Hong^Gildong=洪^吉洞=홍^길동'],
    ['chrRuss.dcm', 'ISO_IR 144', 'Люкceмбypг'],
    ['chrX1.dcm', 'ISO_IR 192', 'Wang^XiaoDong=王^小東'],
    ['chrX2.dcm', 'GB18030', 'Wang^XiaoDong=王^小东'],
    ['chrJapMulti.dcm', '\\ISO 2022 IR 87', 'やまだ^たろう'],
    ['chrJapMultiExplicitIR6.dcm', 'ISO 2022 IR 6\\ISO 2022 IR 87', 'やまだ^たろう'],
    ['chrKoreanMulti.dcm', '\\ISO 2022 IR 149', '김희중'],
  ])('%s (%s) decodes PatientName as %s', async (file, charset, name) => {
    const scanned = await scanBytes(readShared(`charset/pydicom-charset__${file}`));
    expect(scanned.attributes.specificCharacterSet).toBe(charset);
    expect(scanned.attributes.patientName).toBe(name);
  });

  it('splits Person Name groups into DICOM JSON components (PS3.18 F.2.2)', async () => {
    const scanned = await scanBytes(readShared('charset/pydicom-charset__chrH31.dcm'));
    expect(scanned.dataset['00100010'].Value).toEqual([{ Alphabetic: 'Yamada^Tarou', Ideographic: '山田^太郎', Phonetic: 'やまだ^たろう' }]);
  });

  it('decodes multi-valued text in the declared set (chrFrenMulti)', async () => {
    const scanned = await scanBytes(readShared('charset/pydicom-charset__chrFrenMulti.dcm'));
    expect(scanned.dataset['00101001'].Value).toEqual([{ Alphabetic: 'Buc^Jérôme' }, { Alphabetic: 'Buc^Jérôme' }]);
    expect(scanned.dataset['00101000'].Value).toEqual(['eggs', 'spam']);
  });

  it.each([
    // The item declares its own set (ISO 2022 IR 13/87) inside an ISO_IR 192 data set.
    ['chrSQEncoding.dcm'],
    // The item inherits ISO 2022 IR 13/87 from the data set.
    ['chrSQEncoding1.dcm'],
  ])('%s: sequence items decode with their own or the inherited set', async (file) => {
    const scanned = await scanBytes(readShared(`charset/pydicom-charset__${file}`));
    const itemName = (scanned.dataset['00321064'].Value![0] as Record<string, { Value: unknown[] }>)['00100010'].Value;
    expect(itemName).toEqual([{ Alphabetic: 'ﾔﾏﾀﾞ^ﾀﾛｳ', Ideographic: '山田^太郎', Phonetic: 'やまだ^たろう' }]);
    expect(scanned.dataset['00321032'].Value).toEqual([{ Alphabetic: 'Doctor^Who^^MD' }]);
  });
});

describe('createTextDecoder', () => {
  const decode = (charsets: (string | null)[] | null, hex: string, kind: 'multi-valued' | 'person-name' | 'single-valued' = 'multi-valued') =>
    createTextDecoder(charsets)(Buffer.from(hex, 'hex'), kind);

  it.each([
    [['ISO_IR 101'], 'f8', 'ř'],
    [['ISO_IR 148'], 'f0', 'ğ'],
    [['ISO_IR 203'], 'a4', '€'],
    [['ISO_IR 166'], 'a1', 'ก'],
    [['ISO_IR 13'], 'd4', 'ﾔ'],
    [['GBK'], '8140', '丂'],
    [null, '4a657221f46d65', 'Jer!ôme'], // no charset: default repertoire, stray 8-bit bytes kept readable as Latin-1
    [['ISO-IR 100'], 'e9', 'é'], // a common misspelling of the term
  ])('%j decodes %s as %s', (charsets, hex, expected) => {
    expect(decode(charsets, hex)).toBe(expected);
  });

  it('decodes GB18030 before splitting values, so a trail byte 0x5C is not a delimiter', () => {
    expect(decode(['GB18030'], '815c5c41').split('\\')).toEqual(['乗', 'A']);
  });

  it('switches sets on ISO 2022 escapes: GB 2312 (IR 58), JIS X 0212 (IR 159), Latin-1 G1 (IR 100)', () => {
    expect(decode(['', 'ISO 2022 IR 58'], '1b242941cdf5')).toBe('王');
    expect(decode(['', 'ISO 2022 IR 159'], '1b2428443021')).toBe('丂');
    expect(decode(['ISO 2022 IR 6', 'ISO 2022 IR 100'], '1b2d41e9')).toBe('é');
  });

  it('returns to the initial set after a delimiter, even without an escape back (PS3.5 6.1.2.5.3)', () => {
    // Initial G1 is JIS X 0201 katakana; KS X 1001 is designated, then a backslash ends the value.
    expect(decode(['ISO 2022 IR 13', 'ISO 2022 IR 149'], '1b242943c8ab5cd4').split('\\')).toEqual(['홍', 'ﾔ']);
  });

  it('reads a caret inside a two-byte set as part of a character, not as a delimiter', () => {
    // ESC $ B, then JIS 0x3B33 (山) and 0x5E41 (涸), whose first byte is the code of '^'.
    expect(decode(['', 'ISO 2022 IR 87'], '1b24423b335e411b2842', 'person-name')).toBe('山涸');
  });

  it('drops unknown escape sequences rather than failing', () => {
    expect(decode(['', 'ISO 2022 IR 87'], '41 1b7a 42'.replace(/ /g, ''))).toBe('AzB');
  });
});
