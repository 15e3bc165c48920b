/**
 * Writes a de-identified DICOM JSON data set back to Explicit VR Little Endian bytes (PS3.5
 * 7.1.2, A.2). Elements the de-identifier kept unchanged (the same objects as in the converted
 * input) are copied from their stored bytes, so their character set, number formatting and
 * binary values are exactly as stored (Big Endian words swapped); everything else (dummies,
 * PatientKey, shifted dates, mapped UIDs, cleaned text, the method attributes) is encoded from its
 * JSON value. Sequences and items use undefined length.
 */
import type { RawElement } from './data-set-walker';
import { tagKey } from './dicom-json';
import type { DicomJson, DicomJsonElement } from './types';
import { elementHeader, encodeValue } from './transcode-header';
import { KNOWN_VRS, LONG_LENGTH_VRS } from './value-representation';

/** Bytes per word that Big Endian swaps, per VR (PS3.5 7.3). */
const SWAP_WORD: Readonly<Record<string, number>> = {
  US: 2, SS: 2, OW: 2, AT: 2, UL: 4, SL: 4, FL: 4, OF: 4, OL: 4, FD: 8, OD: 8, SV: 8, UV: 8, OV: 8,
};
const ITEM = Buffer.from([0xfe, 0xff, 0x00, 0xe0, 0xff, 0xff, 0xff, 0xff]);
const ITEM_END = Buffer.from([0xfe, 0xff, 0x0d, 0xe0, 0x00, 0x00, 0x00, 0x00]);
const SEQUENCE_END = Buffer.from([0xfe, 0xff, 0xdd, 0xe0, 0x00, 0x00, 0x00, 0x00]);

/** The stored elements behind a converted data set: JSON element object -> its raw element. */
export interface RawBacking {
  bytes: Buffer;
  raw: Map<DicomJsonElement, RawElement>;
}

/** Pairs the elements of `convertToDicomJson(elements, bytes)` with their raw elements (first occurrence of a tag wins, as in the conversion). */
export function pairRawElements(json: DicomJson, elements: RawElement[], raw: Map<DicomJsonElement, RawElement>): void {
  const seen = new Set<number>();
  for (const e of elements) {
    if (seen.has(e.tag)) continue;
    seen.add(e.tag);
    const j = json[tagKey(e.tag)];
    if (!j) continue;
    raw.set(j, e);
    if (e.items && j.Value) {
      e.items.forEach((item, i) => {
        const ji = j.Value![i];
        if (ji && typeof ji === 'object') pairRawElements(ji as DicomJson, item, raw);
      });
    }
  }
}

/** Encodes a (de-identified) DICOM JSON data set as Explicit VR Little Endian, in tag order. */
export function encodeDicomJson(ds: DicomJson, backing: RawBacking | null): Buffer {
  const parts: Buffer[] = [];
  encodeDataSet(ds, backing, parts);
  return Buffer.concat(parts);
}

function encodeDataSet(ds: DicomJson, backing: RawBacking | null, parts: Buffer[]): void {
  const keys = Object.keys(ds).sort();
  for (const key of keys) {
    const tag = parseInt(key, 16) >>> 0;
    const el = ds[key];
    if (!el || tag >>> 16 === 0x0002 || (tag & 0xffff) === 0) continue;
    encodeElement(tag, el, backing, parts);
  }
}

function encodeElement(tag: number, el: DicomJsonElement, backing: RawBacking | null, parts: Buffer[]): void {
  const vr = KNOWN_VRS.has(el.vr) ? el.vr : 'UN';
  const raw = backing?.raw.get(el);
  if (vr === 'SQ') {
    parts.push(elementHeader(tag, 'SQ', 0xffffffff));
    for (const item of el.Value ?? []) {
      parts.push(ITEM);
      if (item && typeof item === 'object') encodeDataSet(item as DicomJson, backing, parts);
      parts.push(ITEM_END);
    }
    parts.push(SEQUENCE_END);
    return;
  }
  if (raw && backing) {
    if (raw.fragments || raw.items) return; // nested encapsulated pixel data (icons) is not carried over
    let value = backing.bytes.subarray(raw.offset, raw.offset + raw.length);
    const word = SWAP_WORD[vr];
    if (!raw.littleEndian && word) value = swapWords(value, word);
    parts.push(...encodeValue(tag, vr, value));
    return;
  }
  if (el.BulkDataURI !== undefined) return; // no bytes to write: leave the element out
  const value = el.InlineBinary !== undefined ? Buffer.from(el.InlineBinary, 'base64') : valueBytes(vr, el.Value ?? []);
  if (value === null) return;
  parts.push(...encodeValue(tag, vr, value));
}

/** The bytes of JSON values for a VR (PS3.18 F.2.3 in reverse); null for a VR it cannot write. */
export function valueBytes(vr: string, values: unknown[]): Buffer | null {
  switch (vr) {
    case 'US': case 'SS': case 'UL': case 'SL': case 'FL': case 'FD': case 'SV': case 'UV':
      return numbers(vr, values);
    case 'AT': {
      const b = Buffer.alloc(values.length * 4);
      values.forEach((v, i) => {
        const n = parseInt(String(v), 16) >>> 0;
        b.writeUInt16LE(n >>> 16, i * 4);
        b.writeUInt16LE(n & 0xffff, i * 4 + 2);
      });
      return b;
    }
    case 'PN':
      return text(values.map(personName).join('\\'));
    case 'DS':
      return text(values.map((v) => (v === null || v === undefined ? '' : formatDecimal(Number(v)))).join('\\'));
    case 'IS':
      return text(values.map((v) => (v === null || v === undefined ? '' : String(Math.trunc(Number(v))))).join('\\'));
    default:
      if (LONG_LENGTH_VRS.has(vr) && !['UC', 'UR', 'UT'].includes(vr)) return values.length ? null : Buffer.alloc(0);
      return text(values.map((v) => (v === null || v === undefined ? '' : String(v))).join('\\'));
  }
}

function numbers(vr: string, values: unknown[]): Buffer {
  const size = vr === 'US' || vr === 'SS' ? 2 : vr === 'FD' || vr === 'SV' || vr === 'UV' ? 8 : 4;
  const b = Buffer.alloc(values.length * size);
  values.forEach((v, i) => {
    const at = i * size;
    const n = Number(v ?? 0);
    switch (vr) {
      case 'US': b.writeUInt16LE(n & 0xffff, at); break;
      case 'SS': b.writeInt16LE(Math.max(-32768, Math.min(32767, n)), at); break;
      case 'UL': b.writeUInt32LE(n >>> 0, at); break;
      case 'SL': b.writeInt32LE(n | 0, at); break;
      case 'FL': b.writeFloatLE(n, at); break;
      case 'FD': b.writeDoubleLE(n, at); break;
      case 'SV': b.writeBigInt64LE(BigInt(String(v ?? 0)), at); break;
      default: b.writeBigUInt64LE(BigInt(String(v ?? 0)), at);
    }
  });
  return b;
}

function personName(v: unknown): string {
  if (!v || typeof v !== 'object') return '';
  const p = v as { Alphabetic?: string; Ideographic?: string; Phonetic?: string };
  return [p.Alphabetic ?? '', p.Ideographic ?? '', p.Phonetic ?? ''].join('=').replace(/=+$/, '');
}

/** New text is ASCII by construction (PatientKey, dummies, dates, UIDs, cleaned words); anything else becomes '?'. */
function text(s: string): Buffer {
  return Buffer.from(s.replace(/[^\x00-\x7f]/g, '?'), 'latin1');
}

/** A DS value in at most 16 characters (PS3.5 6.2). */
export function formatDecimal(n: number): string {
  if (!Number.isFinite(n)) return '0';
  const s = String(n);
  if (s.length <= 16) return s;
  for (let p = 15; p > 0; p--) {
    const t = n.toPrecision(p).replace(/\.?0+e/, 'e').replace(/e\+/, 'e');
    if (t.length <= 16) return t;
  }
  return '0';
}

function swapWords(value: Buffer, word: number): Buffer {
  const out = Buffer.from(value);
  const whole = out.length - (out.length % word);
  for (let at = 0; at < whole; at += word) out.subarray(at, at + word).reverse();
  return out;
}
