/**
 * Turns the walker's raw elements into the DICOM JSON Model (PS3.18 F.2): typed values,
 * Person Name groups, character sets, and bulk values replaced by BulkDataURIs.
 */
import type { DicomJson, DicomJsonElement } from './types';
import type { RawElement } from './data-set-walker';
import { createTextDecoder, TextDecodeFn } from './character-set';
import {
  BINARY_WORD_SIZE,
  BULK_VRS,
  CHARSET_VRS,
  NUMBER_SIZE,
  SINGLE_VALUE_TEXT_VRS,
  TRIM_BOTH_VRS,
  lookupDictionaryVr,
} from './value-representation';

/** Binary values up to this size are inlined as base64; longer ones become BulkDataURIs. */
export const INLINE_BINARY_MAX = 256;

const TAG_SPECIFIC_CHARACTER_SET = 0x00080005;
const TAG_PIXEL_REPRESENTATION = 0x00280103;
const TAG_DATA_SET_TRAILING_PADDING = 0xfffcfffc;

const IS_PATTERN = /^[+-]?\d+$/;
const DS_PATTERN = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

const tagKeys = new Map<number, string>();

/** The 8 upper-case hex digit key of a tag (PS3.18 F.2.1.1). */
export function tagKey(tag: number): string {
  let key = tagKeys.get(tag);
  if (key === undefined) {
    key = tag.toString(16).toUpperCase().padStart(8, '0');
    // Headers repeat the same few thousand tags; garbage tags are not worth remembering.
    if (tagKeys.size < 50_000) tagKeys.set(tag, key);
  }
  return key;
}

interface Scope {
  bytes: Buffer;
  decode: TextDecodeFn;
  pixelRepresentation: number | null;
  /** Tag path of the enclosing item, e.g. `00880200/0/`, for BulkDataURIs. */
  path: string;
}

/**
 * Converts a parsed data set to DICOM JSON (PS3.18 F.2). File Meta (group 0002), group lengths
 * and trailing padding are left out: they describe the encoding, not the instance.
 * Recursion depth is bounded by the walker's sequence depth limit.
 */
export function convertToDicomJson(elements: RawElement[], bytes: Buffer): DicomJson {
  return convertDataSet(elements, { bytes, decode: createTextDecoder(null), pixelRepresentation: null, path: '' }, '');
}

function convertDataSet(elements: RawElement[], parent: Scope, path: string): DicomJson {
  const bytes = parent.bytes;
  let decode = parent.decode;
  let pixelRepresentation = parent.pixelRepresentation;
  // An item may declare its own character set (PS3.5 7.5.3); otherwise it inherits its parent's.
  for (const element of elements) {
    if (element.tag === TAG_SPECIFIC_CHARACTER_SET) {
      decode = createTextDecoder(splitText(latin1(bytes, element), true).map((v) => trimValue(v, 'CS')));
    } else if (element.tag === TAG_PIXEL_REPRESENTATION && element.length >= 2) {
      pixelRepresentation = element.littleEndian ? bytes.readUInt16LE(element.offset) : bytes.readUInt16BE(element.offset);
    }
  }
  const scope: Scope = { bytes, decode, pixelRepresentation, path };
  const json: DicomJson = {};
  for (const element of elements) {
    const tag = element.tag;
    if (tag >>> 16 === 0x0002 || (tag & 0xffff) === 0 || tag === TAG_DATA_SET_TRAILING_PADDING) continue;
    const key = tagKey(tag);
    if (key in json) continue; // a repeated tag is malformed; the first occurrence wins
    json[key] = convertElement(element, key, scope);
  }
  return json;
}

function convertElement(element: RawElement, key: string, scope: Scope): DicomJsonElement {
  const vr = resolveVr(element, scope);
  if (element.items) {
    const items = element.items.map((item, i) => convertDataSet(item, scope, `${scope.path}${key}/${i}/`));
    return items.length ? { vr: 'SQ', Value: items } : { vr: 'SQ' };
  }
  if (element.fragments) return { vr, BulkDataURI: `bulkdata/${scope.path}${key}` };
  if (element.length === 0) return { vr };
  if (BULK_VRS.has(vr)) {
    if (element.length > INLINE_BINARY_MAX) return { vr, BulkDataURI: `bulkdata/${scope.path}${key}` };
    return { vr, InlineBinary: inlineBinary(element, vr, scope).toString('base64') };
  }
  const size = NUMBER_SIZE[vr];
  if (size) return withValues(vr, readNumbers(scope.bytes, element, vr, size));
  if (vr === 'AT') return withValues(vr, readTags(scope.bytes, element));
  const multiValued = !SINGLE_VALUE_TEXT_VRS.has(vr);
  const text = CHARSET_VRS.has(vr)
    ? scope.decode(bytesOf(element, scope), vr === 'PN' ? 'person-name' : multiValued ? 'multi-valued' : 'single-valued')
    : latin1(scope.bytes, element);
  const values = splitText(text, multiValued);
  if (values.length === 1) {
    const only = trimValue(values[0], vr);
    return only === '' ? { vr } : { vr, Value: [typedString(only, vr)] };
  }
  return { vr, Value: values.map((v) => trimValue(v, vr)).map((v) => (v === '' ? null : typedString(v, vr))) };
}

function withValues(vr: string, values: unknown[]): DicomJsonElement {
  return values.length ? { vr, Value: values } : { vr };
}

/** Picks a concrete VR where the encoding left it open (PS3.5 A.1: Implicit VR, PS3.5 6.2.2: UN). */
function resolveVr(element: RawElement, scope: Scope): string {
  let vr = element.vr;
  if (vr === 'UN' && element.littleEndian && !element.items) {
    // Explicit UN on a public tag (a writer that lacked the dictionary): the value bytes are the
    // Little Endian encoding of the real VR, so read it as that (as dcmtk and pydicom do).
    const known = lookupDictionaryVr(element.tag);
    if (known && known !== 'SQ' && known !== 'UN') vr = known;
  }
  if (vr === 'ox' || vr === 'lt') return 'OW';
  if (vr === 'xs') return scope.pixelRepresentation === 1 ? 'SS' : 'US';
  return vr;
}

function bytesOf(element: RawElement, scope: Scope): Buffer {
  return scope.bytes.subarray(element.offset, element.offset + element.length);
}

/** Default-repertoire text straight from the buffer, without an intermediate view. */
function latin1(bytes: Buffer, element: RawElement): string {
  return bytes.toString('latin1', element.offset, element.offset + element.length);
}

function splitText(text: string, multiValued: boolean): string[] {
  return multiValued ? text.split('\\') : [text];
}

/** Drops padding: trailing spaces and NULs always, leading spaces where the VR says so (PS3.5 table 6.2-1). */
function trimValue(value: string, vr: string): string {
  let end = value.length;
  while (end > 0 && (value.charCodeAt(end - 1) === 0x20 || value.charCodeAt(end - 1) === 0)) end--;
  let start = 0;
  if (TRIM_BOTH_VRS.has(vr)) while (start < end && value.charCodeAt(start) === 0x20) start++;
  return value.slice(start, end);
}

/** IS/DS become JSON numbers, PN becomes its component groups (PS3.18 F.2.3, F.2.2). Invalid numbers become null. */
function typedString(value: string, vr: string): unknown {
  if (vr === 'IS' || vr === 'DS') {
    const text = value.trim();
    if (!(vr === 'IS' ? IS_PATTERN : DS_PATTERN).test(text)) return null;
    const n = Number(text);
    return Number.isFinite(n) ? n : null;
  }
  if (vr === 'PN') {
    const [alphabetic, ideographic, phonetic] = value.split('=');
    const name: Record<string, string> = {};
    if (alphabetic) name.Alphabetic = alphabetic;
    if (ideographic) name.Ideographic = ideographic;
    if (phonetic) name.Phonetic = phonetic;
    return Object.keys(name).length ? name : null;
  }
  return value;
}

function readNumbers(bytes: Buffer, element: RawElement, vr: string, size: number): unknown[] {
  const little = element.littleEndian;
  const count = Math.floor(element.length / size);
  const values: unknown[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const at = element.offset + i * size;
    switch (vr) {
      case 'US': values[i] = little ? bytes.readUInt16LE(at) : bytes.readUInt16BE(at); break;
      case 'SS': values[i] = little ? bytes.readInt16LE(at) : bytes.readInt16BE(at); break;
      case 'UL': values[i] = little ? bytes.readUInt32LE(at) : bytes.readUInt32BE(at); break;
      case 'SL': values[i] = little ? bytes.readInt32LE(at) : bytes.readInt32BE(at); break;
      case 'FL': values[i] = finiteOrNull(little ? bytes.readFloatLE(at) : bytes.readFloatBE(at)); break;
      case 'FD': values[i] = finiteOrNull(little ? bytes.readDoubleLE(at) : bytes.readDoubleBE(at)); break;
      default: {
        // SV/UV: a JSON number while exact, else the decimal string (PS3.18 F.2.3.1).
        const big = vr === 'SV' ? (little ? bytes.readBigInt64LE(at) : bytes.readBigInt64BE(at)) : (little ? bytes.readBigUInt64LE(at) : bytes.readBigUInt64BE(at));
        values[i] = big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big.toString();
      }
    }
  }
  return values;
}

/** JSON has no NaN or Infinity. */
function finiteOrNull(n: number): number | null {
  return Number.isFinite(n) ? n : null;
}

function readTags(bytes: Buffer, element: RawElement): string[] {
  const little = element.littleEndian;
  const values: string[] = [];
  for (let at = element.offset; at + 4 <= element.offset + element.length; at += 4) {
    const group = little ? bytes.readUInt16LE(at) : bytes.readUInt16BE(at);
    const element = little ? bytes.readUInt16LE(at + 2) : bytes.readUInt16BE(at + 2);
    values.push(tagKey(((group << 16) | element) >>> 0));
  }
  return values;
}

/** InlineBinary is Little Endian (PS3.18 F.2.7): Big Endian words are swapped. */
function inlineBinary(element: RawElement, vr: string, scope: Scope): Buffer {
  const bytes = bytesOf(element, scope);
  const word = BINARY_WORD_SIZE[vr];
  if (element.littleEndian || !word) return bytes;
  const swapped = Buffer.from(bytes);
  for (let at = 0; at + word <= swapped.length; at += word) swapped.subarray(at, at + word).reverse();
  return swapped;
}
