/**
 * Value Representation facts (PS3.5 6.2) and the data dictionary look-up that Implicit VR
 * data sets need, since their elements carry no VR (PS3.5 7.1.3).
 */

/** Every VR defined by PS3.5 table 6.2-1. */
export const KNOWN_VRS: ReadonlySet<string> = new Set(
  'AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV'.split(' '),
);

/** VRs whose explicit header is 2 reserved bytes + a 32-bit length (PS3.5 7.1.2, table 7.1-1). */
export const LONG_LENGTH_VRS: ReadonlySet<string> = new Set(
  'OB OD OF OL OV OW SQ UC UN UR UT SV UV'.split(' '),
);

/** Binary VRs that DICOM JSON carries as InlineBinary or BulkDataURI (PS3.18 F.2.7). */
export const BULK_VRS: ReadonlySet<string> = new Set('OB OD OF OL OV OW UN'.split(' '));

/** Word size of binary VRs, for byte-swapping Big Endian values to the Little Endian that DICOM JSON uses. */
export const BINARY_WORD_SIZE: Readonly<Record<string, number>> = { OW: 2, OF: 4, OL: 4, OD: 8, OV: 8 };

/** Text VRs whose values use SpecificCharacterSet (PS3.5 6.1.2.3); the others are default repertoire. */
export const CHARSET_VRS: ReadonlySet<string> = new Set('LO LT PN SH ST UC UT'.split(' '));

/** Text VRs that are never multi-valued, so a backslash is just a character (PS3.5 6.4). */
export const SINGLE_VALUE_TEXT_VRS: ReadonlySet<string> = new Set('LT ST UT UR'.split(' '));

/** Text VRs whose leading spaces are insignificant too, not just trailing ones (PS3.5 table 6.2-1). */
export const TRIM_BOTH_VRS: ReadonlySet<string> = new Set('AE CS DS IS LO SH'.split(' '));

/** Fixed-size numeric VRs and their byte size (PS3.5 table 6.2-1). */
export const NUMBER_SIZE: Readonly<Record<string, number>> = {
  US: 2, SS: 2, UL: 4, SL: 4, FL: 4, FD: 8, SV: 8, UV: 8,
};

/** True for two upper-case ASCII letters: the shape of every VR, present or future (PS3.5 6.2). */
export function isVrShaped(b0: number, b1: number): boolean {
  return b0 >= 0x41 && b0 <= 0x5a && b1 >= 0x41 && b1 <= 0x5a;
}

interface DictionaryEntry {
  vr: string;
}

let dictionary: Record<string, DictionaryEntry | undefined> | null = null;
const vrCache = new Map<number, string | null>();

/**
 * The dictionary VR of a tag for Implicit VR data sets (PS3.5 7.1.3, PS3.6 table 6-1), via the
 * dcmjs dictionary; undefined when unknown. Multi-VR entries come back as dcmjs spells them:
 * `ox` (OB or OW), `xs` (US or SS), `lt` (US, SS or OW).
 */
export function lookupDictionaryVr(tag: number): string | undefined {
  const group = tag >>> 16;
  const element = tag & 0xffff;
  if (element === 0) return 'UL'; // group length (PS3.5 7.2)
  if (group & 1) return element >= 0x10 && element <= 0xff ? 'LO' : undefined; // private creator (PS3.5 7.8.1)
  const cached = vrCache.get(tag);
  if (cached !== undefined) return cached ?? undefined;
  // Loaded on first use so that importing this module does no work.
  dictionary ??= (require('dcmjs') as { data: { DicomMetaDictionary: { dictionary: Record<string, DictionaryEntry | undefined> } } })
    .data.DicomMetaDictionary.dictionary;
  const entry = dictionary[tag.toString(16).toUpperCase().padStart(8, '0')];
  const vr = entry && entry.vr !== 'na' ? entry.vr : null;
  // Bounded: public tags are a finite set, but garbage tags are not worth remembering forever.
  if (vr !== null || vrCache.size < 100_000) vrCache.set(tag, vr);
  return vr ?? undefined;
}
