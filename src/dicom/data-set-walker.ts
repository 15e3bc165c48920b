/**
 * A resumable, iterative walker over the encoded elements of a data set (PS3.5 7).
 *
 * Why our own reader and not dcmjs: the scanner sees bytes as they stream in and must stop at
 * the top-level Pixel Data without ever holding it, resume across chunk boundaries, survive
 * hostile nesting without recursion, read Big Endian and raw (meta-less) data sets, and apply
 * CP-246 (UN of undefined length is Implicit VR Little Endian) - dcmjs's reader needs the
 * whole buffer, recurses per sequence and assumes Little Endian inside UN. dcmjs still
 * supplies the data dictionary (value-representation.ts) and serves as the tests' oracle.
 *
 * The walker records where each value lives (offsets into the caller's growing buffer); it
 * decodes nothing. Values are turned into DICOM JSON once the header is complete.
 */
import { DicomInstanceError, StatusCode } from './types';
import { DataSetEncoding, IMPLICIT_LITTLE } from './transfer-syntax';
import { KNOWN_VRS, LONG_LENGTH_VRS, isVrShaped, lookupDictionaryVr } from './value-representation';

export const UNDEFINED_LENGTH = 0xffffffff;
export const TAG_ITEM = 0xfffee000;
export const TAG_ITEM_DELIMITATION = 0xfffee00d;
export const TAG_SEQUENCE_DELIMITATION = 0xfffee0dd;
export const TAG_PIXEL_DATA = 0x7fe00010;
/** Float Pixel Data and Double Float Pixel Data stand in for Pixel Data in their IODs (PS3.3 C.7.6.3). */
export const PIXEL_DATA_TAGS: ReadonlySet<number> = new Set([TAG_PIXEL_DATA, 0x7fe00008, 0x7fe00009]);

/** One element as encoded: where its value is, not what it is. */
export interface RawElement {
  tag: number;
  /** As encoded, or from the dictionary for Implicit VR (may be dcmjs's `ox`/`xs`/`lt`); `SQ` for anything parsed as a sequence. */
  vr: string;
  /** Byte offset of the value in the walker's byte space. */
  offset: number;
  /** Value length in bytes; UNDEFINED_LENGTH for sequences and encapsulated values of undefined length. */
  length: number;
  littleEndian: boolean;
  /** Sequence items, each a list of elements. */
  items?: RawElement[][];
  /** Fragments of a nested encapsulated Pixel Data (e.g. an icon, PS3.3 F.7), offsets in the walker's byte space. */
  fragments?: { offset: number; length: number }[];
}

/** The top-level Pixel Data element header, where the header ends (PS3.5 A.4 for encapsulated). */
export interface PixelDataHeader {
  tag: number;
  vr: string;
  tagOffset: number;
  valueOffset: number;
  /** UNDEFINED_LENGTH when encapsulated. */
  length: number;
}

export type WalkOutcome =
  | { kind: 'need-more' }
  /** Meta mode only: the next top-level element is not in group 0002. */
  | { kind: 'meta-end' }
  | { kind: 'pixel-data'; header: PixelDataHeader }
  /** Zero bytes where a top-level element should start: trailing padding, the data set is over. */
  | { kind: 'padding' };

export interface WalkerLimits {
  /** Sequence nesting deeper than this is refused (recursive consumers downstream, JSON depth). */
  maxDepth: number;
  /** Elements + items over the whole data set; bounds the memory of the parsed tree. */
  maxElements: number;
}

type Frame =
  | { kind: 'data-set'; elements: RawElement[]; end: number; enc: DataSetEncoding; top: boolean }
  | { kind: 'sequence'; element: RawElement; end: number; enc: DataSetEncoding }
  | { kind: 'fragments'; element: RawElement; enc: DataSetEncoding };

const NEED_MORE: WalkOutcome = { kind: 'need-more' };

function cannotUnderstand(message: string): DicomInstanceError {
  return new DicomInstanceError(message, StatusCode.CannotUnderstand);
}

function hex(tag: number): string {
  const s = tag.toString(16).toUpperCase().padStart(8, '0');
  return `(${s.slice(0, 4)},${s.slice(4)})`;
}

/** Walks elements of one data set, resuming wherever the bytes ran out last time. */
export class DataSetWalker {
  /** Top-level elements in encounter order. */
  readonly elements: RawElement[] = [];
  /** Next byte to read in the caller's byte space. */
  pos: number;
  private readonly stack: Frame[];
  private sequenceDepth = 0;
  private elementCount = 0;
  private metaOnly: boolean;

  constructor(
    start: number,
    encoding: DataSetEncoding,
    private readonly limits: WalkerLimits,
    options: { metaOnly?: boolean } = {},
  ) {
    this.pos = start;
    this.metaOnly = options.metaOnly ?? false;
    this.stack = [{ kind: 'data-set', elements: this.elements, end: -1, enc: encoding, top: true }];
  }

  /** After the File Meta Information: the rest of the top level uses the Transfer Syntax's encoding (PS3.10 7.1). */
  beginDataSet(encoding: DataSetEncoding): void {
    this.metaOnly = false;
    this.stack[0].enc = encoding;
  }

  /**
   * Reads as far as bytes [0, available) of `buf` allow. Stops at the top-level Pixel Data
   * (without consuming it), at the end of the meta group in meta mode, or when more bytes are needed.
   * Throws DicomInstanceError on malformed structure.
   */
  walk(buf: Buffer, available: number): WalkOutcome {
    for (;;) {
      const frame = this.stack[this.stack.length - 1];
      if (frame.kind === 'data-set') {
        const outcome = this.stepDataSet(frame, buf, available);
        if (outcome) return outcome;
      } else if (frame.kind === 'sequence') {
        if (!this.stepSequence(frame, buf, available)) return NEED_MORE;
      } else if (!this.stepFragments(frame, buf, available)) return NEED_MORE;
    }
  }

  /**
   * Called at end of stream after a last `walk`: the data set must end exactly at an element
   * boundary, or in zero padding. Throws DicomInstanceError (truncated) otherwise.
   */
  finish(buf: Buffer, available: number): void {
    if (this.stack.length > 1) throw cannotUnderstand('data set ends inside a sequence (truncated)');
    if (this.pos > available) throw cannotUnderstand(`data set truncated: an element value runs ${this.pos - available} bytes past the end`);
    for (let i = this.pos; i < available; i++) {
      if (buf[i] !== 0) throw cannotUnderstand(`${available - this.pos} stray bytes after the last element`);
    }
  }

  private stepDataSet(frame: Extract<Frame, { kind: 'data-set' }>, buf: Buffer, available: number): WalkOutcome | null {
    const pos = this.pos;
    if (!frame.top && frame.end >= 0) {
      if (pos > frame.end) throw cannotUnderstand('element runs past the end of its item');
      if (pos === frame.end) {
        this.pop();
        return null;
      }
    }
    if (pos + 8 > available) return NEED_MORE;
    const little = frame.enc.littleEndian;
    const group = little ? buf.readUInt16LE(pos) : buf.readUInt16BE(pos);
    const elementNumber = little ? buf.readUInt16LE(pos + 2) : buf.readUInt16BE(pos + 2);
    const tag = ((group << 16) | elementNumber) >>> 0;

    if (frame.top && this.metaOnly && group !== 0x0002) return { kind: 'meta-end' };
    if (tag === TAG_ITEM_DELIMITATION) {
      if (frame.top || frame.end >= 0) throw cannotUnderstand('item delimiter outside an undefined-length item');
      this.pos = pos + 8;
      this.pop();
      return null;
    }
    if (group === 0xfffe) throw cannotUnderstand(`unexpected ${hex(tag)} in a data set`);
    if (frame.top && tag === 0 && isZero(buf, pos, 8)) return { kind: 'padding' };

    let vr: string;
    let length: number;
    let headerLength: number;
    if (frame.enc.explicitVR) {
      const b0 = buf[pos + 4];
      const b1 = buf[pos + 5];
      if (!isVrShaped(b0, b1)) throw cannotUnderstand(`invalid VR bytes ${b0},${b1} at ${hex(tag)}`);
      vr = String.fromCharCode(b0, b1);
      // PS3.5 6.2: VRs defined later all use the 32-bit length form, so unknown ones are read that way.
      if (LONG_LENGTH_VRS.has(vr) || !KNOWN_VRS.has(vr)) {
        if (pos + 12 > available) return NEED_MORE;
        length = little ? buf.readUInt32LE(pos + 8) : buf.readUInt32BE(pos + 8);
        headerLength = 12;
      } else {
        length = little ? buf.readUInt16LE(pos + 6) : buf.readUInt16BE(pos + 6);
        headerLength = 8;
      }
    } else {
      length = little ? buf.readUInt32LE(pos + 4) : buf.readUInt32BE(pos + 4);
      vr = lookupDictionaryVr(tag) ?? 'UN';
      headerLength = 8;
    }
    const valueOffset = pos + headerLength;

    if (frame.top && PIXEL_DATA_TAGS.has(tag) && !this.metaOnly) {
      return { kind: 'pixel-data', header: { tag, vr, tagOffset: pos, valueOffset, length } };
    }

    const element: RawElement = { tag, vr, offset: valueOffset, length, littleEndian: little };
    if (length === UNDEFINED_LENGTH) {
      if (PIXEL_DATA_TAGS.has(tag)) {
        // Nested encapsulated pixel data, e.g. an icon (PS3.3 F.7).
        element.fragments = [];
        this.push(frame, element, { kind: 'fragments', element, enc: frame.enc });
      } else if (vr === 'SQ' || vr === 'UN' || !frame.enc.explicitVR) {
        // Implicit VR: only a sequence can have undefined length. UN: CP-246, the content is a
        // sequence encoded in Implicit VR Little Endian whatever the Transfer Syntax.
        const enc = frame.enc.explicitVR && vr === 'UN' ? IMPLICIT_LITTLE : frame.enc;
        element.vr = 'SQ';
        element.items = [];
        this.push(frame, element, { kind: 'sequence', element, end: -1, enc });
      } else {
        throw cannotUnderstand(`undefined length on ${hex(tag)} ${vr}`);
      }
      this.pos = valueOffset;
      return null;
    }

    const end = valueOffset + length;
    if (!frame.top && frame.end >= 0 && end > frame.end) throw cannotUnderstand(`${hex(tag)} runs past the end of its item`);
    let isSequence = vr === 'SQ';
    if (!isSequence && !frame.enc.explicitVR && vr === 'UN' && length >= 8) {
      // Implicit VR element unknown to the dictionary (typically private): a value that opens
      // with an Item tag is a sequence of defined length (PS3.5 7.5.1).
      if (valueOffset + 4 > available) return NEED_MORE;
      isSequence = buf.readUInt32LE(valueOffset) === 0xe000fffe;
    }
    if (isSequence) {
      element.vr = 'SQ';
      element.items = [];
      this.push(frame, element, { kind: 'sequence', element, end, enc: frame.enc });
      this.pos = valueOffset;
      return null;
    }
    this.add(frame.elements, element);
    this.pos = end;
    return null;
  }

  private stepSequence(frame: Extract<Frame, { kind: 'sequence' }>, buf: Buffer, available: number): boolean {
    const pos = this.pos;
    if (frame.end >= 0) {
      if (pos > frame.end) throw cannotUnderstand(`item runs past the end of sequence ${hex(frame.element.tag)}`);
      if (pos === frame.end) {
        this.pop();
        return true;
      }
    }
    if (pos + 8 > available) return false;
    const little = frame.enc.littleEndian;
    const tag = this.readTag(buf, pos, little);
    const length = little ? buf.readUInt32LE(pos + 4) : buf.readUInt32BE(pos + 4);
    if (tag === TAG_ITEM) {
      const end = length === UNDEFINED_LENGTH ? -1 : pos + 8 + length;
      if (frame.end >= 0 && end > frame.end) throw cannotUnderstand(`item runs past the end of sequence ${hex(frame.element.tag)}`);
      const item: RawElement[] = [];
      this.count();
      frame.element.items!.push(item);
      this.stack.push({ kind: 'data-set', elements: item, end, enc: frame.enc, top: false });
      this.pos = pos + 8;
      return true;
    }
    if (tag === TAG_SEQUENCE_DELIMITATION && frame.end < 0) {
      this.pos = pos + 8;
      this.pop();
      return true;
    }
    throw cannotUnderstand(`expected an item in sequence ${hex(frame.element.tag)}, found ${hex(tag)}`);
  }

  private stepFragments(frame: Extract<Frame, { kind: 'fragments' }>, buf: Buffer, available: number): boolean {
    const pos = this.pos;
    if (pos + 8 > available) return false;
    const little = frame.enc.littleEndian;
    const tag = this.readTag(buf, pos, little);
    const length = little ? buf.readUInt32LE(pos + 4) : buf.readUInt32BE(pos + 4);
    if (tag === TAG_ITEM && length !== UNDEFINED_LENGTH) {
      this.count();
      frame.element.fragments!.push({ offset: pos + 8, length });
      this.pos = pos + 8 + length;
      return true;
    }
    if (tag === TAG_SEQUENCE_DELIMITATION) {
      this.pos = pos + 8;
      this.pop();
      return true;
    }
    throw cannotUnderstand(`expected a fragment in encapsulated ${hex(frame.element.tag)}, found ${hex(tag)}`);
  }

  private readTag(buf: Buffer, pos: number, little: boolean): number {
    const group = little ? buf.readUInt16LE(pos) : buf.readUInt16BE(pos);
    const element = little ? buf.readUInt16LE(pos + 2) : buf.readUInt16BE(pos + 2);
    return ((group << 16) | element) >>> 0;
  }

  private push(parent: Extract<Frame, { kind: 'data-set' }>, element: RawElement, frame: Frame): void {
    this.add(parent.elements, element);
    if (++this.sequenceDepth > this.limits.maxDepth) {
      throw cannotUnderstand(`sequences nested deeper than ${this.limits.maxDepth} levels`);
    }
    this.stack.push(frame);
  }

  private pop(): void {
    const frame = this.stack.pop()!;
    if (frame.kind !== 'data-set') this.sequenceDepth--;
  }

  private add(elements: RawElement[], element: RawElement): void {
    this.count();
    elements.push(element);
  }

  private count(): void {
    if (++this.elementCount > this.limits.maxElements) {
      throw new DicomInstanceError(`more than ${this.limits.maxElements} elements in the header`, StatusCode.OutOfResources);
    }
  }
}

function isZero(buf: Buffer, start: number, length: number): boolean {
  for (let i = start; i < start + length; i++) if (buf[i] !== 0) return false;
  return true;
}
