/**
 * Re-encodes a parsed header in Explicit VR Little Endian (PS3.5 7.1.2, A.2) whatever it was
 * stored in: Implicit VR gets its VRs from the dictionary, Big Endian values are byte-swapped per
 * VR, sequences and items are written with undefined length (always legal, nothing to recount).
 */
import type { RawElement } from './data-set-walker';
import { KNOWN_VRS, LONG_LENGTH_VRS } from './value-representation';

/** Bytes per word that Big Endian swaps, per VR (PS3.5 7.3); AT swaps its group and element separately. */
const SWAP_WORD: Readonly<Record<string, number>> = {
  US: 2, SS: 2, OW: 2, AT: 2,
  UL: 4, SL: 4, FL: 4, OF: 4, OL: 4,
  FD: 8, OD: 8, SV: 8, UV: 8, OV: 8,
};

/** Top-level changes: elements to set (replacing or inserting) and a filter of tags to leave out. */
export interface HeaderEdits {
  set: Map<number, { vr: string; value: Buffer }>;
  drop: (tag: number) => boolean;
}

/** What resolves the VRs Implicit VR leaves ambiguous (`xs`: US or SS by Pixel Representation). */
export interface VrContext {
  pixelRepresentation: number;
}

const TAG_TRAILING_PADDING = 0xfffcfffc;
const ITEM = Buffer.from([0xfe, 0xff, 0x00, 0xe0, 0xff, 0xff, 0xff, 0xff]);
const ITEM_END = Buffer.from([0xfe, 0xff, 0x0d, 0xe0, 0x00, 0x00, 0x00, 0x00]);
const SEQUENCE_END = Buffer.from([0xfe, 0xff, 0xdd, 0xe0, 0x00, 0x00, 0x00, 0x00]);

/**
 * Encodes top-level `elements` (whose values are in `bytes`) as Explicit VR Little Endian,
 * applying `edits`. Group lengths (gggg,0000) and Data Set Trailing Padding are dropped, and so is
 * any sequence holding encapsulated pixel data (e.g. a compressed Icon Image Sequence, which
 * cannot stay compressed in a native Transfer Syntax).
 */
export function encodeExplicitLittle(elements: RawElement[], bytes: Buffer, ctx: VrContext, edits: HeaderEdits): Buffer {
  const out: Array<{ tag: number; bytes: Buffer }> = [];
  for (const e of elements) {
    if (edits.set.has(e.tag) || edits.drop(e.tag) || skipped(e)) continue;
    out.push({ tag: e.tag, bytes: Buffer.concat(encodeElement(e, bytes, ctx)) });
  }
  for (const [tag, { vr, value }] of edits.set) out.push({ tag, bytes: Buffer.concat(encodeValue(tag, vr, value)) });
  out.sort((a, b) => a.tag - b.tag);
  return Buffer.concat(out.map((o) => o.bytes));
}

function skipped(e: RawElement): boolean {
  return (e.tag & 0xffff) === 0 || e.tag === TAG_TRAILING_PADDING || e.tag >>> 16 === 0x0002 || holdsFragments(e);
}

function holdsFragments(e: RawElement): boolean {
  if (e.fragments) return true;
  return e.items?.some((item) => item.some(holdsFragments)) ?? false;
}

function encodeElement(e: RawElement, bytes: Buffer, ctx: VrContext): Buffer[] {
  if (e.items) {
    const parts: Buffer[] = [elementHeader(e.tag, 'SQ', 0xffffffff)];
    for (const item of e.items) {
      parts.push(ITEM);
      for (const child of item) if (!skipped(child)) parts.push(...encodeElement(child, bytes, ctx));
      parts.push(ITEM_END);
    }
    parts.push(SEQUENCE_END);
    return parts;
  }
  const vr = resolveVr(e.vr, ctx);
  let value = bytes.subarray(e.offset, e.offset + e.length);
  const word = SWAP_WORD[vr];
  if (!e.littleEndian && word) value = swapWords(value, word);
  return encodeValue(e.tag, vr, value);
}

/** One element: header and value (padded to even length, as every value must be: PS3.5 7.1.1). */
export function encodeValue(tag: number, vr: string, value: Buffer): Buffer[] {
  let v = vr;
  // A value too long for a 16-bit length field can only be carried as UN (PS3.5 6.2.2).
  if (!LONG_LENGTH_VRS.has(v) && value.length > 0xffff) v = 'UN';
  const padded = value.length % 2 ? Buffer.concat([value, Buffer.from([padByte(v)])]) : value;
  return [elementHeader(tag, v, padded.length), padded];
}

function padByte(vr: string): number {
  return vr === 'UI' || vr === 'OB' || vr === 'UN' ? 0x00 : 0x20;
}

/** An Explicit VR Little Endian element header (PS3.5 7.1.2). */
export function elementHeader(tag: number, vr: string, length: number): Buffer {
  const long = LONG_LENGTH_VRS.has(vr);
  const h = Buffer.alloc(long ? 12 : 8);
  h.writeUInt16LE(tag >>> 16, 0);
  h.writeUInt16LE(tag & 0xffff, 2);
  h.write(vr, 4, 'latin1');
  if (long) h.writeUInt32LE(length >>> 0, 8);
  else h.writeUInt16LE(length, 6);
  return h;
}

/** Picks a concrete VR for dictionary VRs that name several (dcmjs: `ox`, `xs`, `lt`); unknown ones become UN. */
export function resolveVr(vr: string, ctx: VrContext): string {
  if (vr === 'ox' || vr === 'lt') return 'OW';
  if (vr === 'xs') return ctx.pixelRepresentation === 1 ? 'SS' : 'US';
  return KNOWN_VRS.has(vr) ? vr : 'UN';
}

function swapWords(value: Buffer, word: number): Buffer {
  const out = Buffer.from(value);
  const whole = out.length - (out.length % word);
  for (let at = 0; at < whole; at += word) out.subarray(at, at + word).reverse();
  return out;
}

/** A text value padded as its VR requires (CS, UI ...). */
export function textValue(text: string, vr: string): Buffer {
  const b = Buffer.from(text, 'latin1');
  return b.length % 2 ? Buffer.concat([b, Buffer.from([padByte(vr)])]) : b;
}

/** A US value. */
export function usValue(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return b;
}
