/**
 * Streaming reader of encapsulated Pixel Data (PS3.5 A.4): jumps from item header to item
 * header as chunks go by, keeping only the Basic Offset Table and, per fragment, its position
 * and first bytes. Fragment values are never copied.
 */
import { DicomInstanceError, StatusCode } from './types';
import { TAG_ITEM, TAG_SEQUENCE_DELIMITATION, UNDEFINED_LENGTH } from './data-set-walker';

/** How many leading bytes of each fragment are kept, enough for SOI (FFD8) or SOC+SIZ (FF4F FF51). */
export const FRAGMENT_HEAD_BYTES = 4;

/** Fragments as parallel typed arrays: a few bytes each, whatever their number. */
export class FragmentTable {
  count = 0;
  private itemOffsets = new Float64Array(64);
  private lengths = new Float64Array(64);
  private heads = new Uint32Array(64);
  private headLengths = new Uint8Array(64);

  constructor(private readonly maxFragments: number) {}

  add(itemOffset: number, length: number): void {
    if (this.count === this.maxFragments) {
      throw new DicomInstanceError(`more than ${this.maxFragments} Pixel Data fragments`, StatusCode.OutOfResources);
    }
    if (this.count === this.itemOffsets.length) this.grow();
    this.itemOffsets[this.count] = itemOffset;
    this.lengths[this.count] = length;
    this.count++;
  }

  /** Appends the next byte of the last fragment's head. */
  pushHeadByte(byte: number): void {
    const i = this.count - 1;
    this.heads[i] = ((this.heads[i] << 8) | byte) >>> 0;
    this.headLengths[i]++;
  }

  headLength(i: number): number {
    return this.headLengths[i];
  }

  /** The first `n` bytes of fragment i as a number (big-endian), or -1 if it is shorter. */
  head(i: number, n: number): number {
    const have = this.headLengths[i];
    if (have < n) return -1;
    return Math.floor(this.heads[i] / 2 ** (8 * (have - n)));
  }

  /** Absolute offset of fragment i's item tag. */
  itemOffset(i: number): number {
    return this.itemOffsets[i];
  }

  /** Absolute offset of fragment i's value (after the 8-byte item header). */
  valueOffset(i: number): number {
    return this.itemOffsets[i] + 8;
  }

  length(i: number): number {
    return this.lengths[i];
  }

  private grow(): void {
    const size = this.itemOffsets.length * 2;
    const grow = <T extends Float64Array | Uint32Array | Uint8Array>(a: T, make: (n: number) => T): T => {
      const b = make(size);
      b.set(a);
      return b;
    };
    this.itemOffsets = grow(this.itemOffsets, (n) => new Float64Array(n));
    this.lengths = grow(this.lengths, (n) => new Float64Array(n));
    this.heads = grow(this.heads, (n) => new Uint32Array(n));
    this.headLengths = grow(this.headLengths, (n) => new Uint8Array(n));
  }
}

/** Reads the item headers of one encapsulated Pixel Data value as its bytes stream past. */
export class EncapsulatedPixelDataReader {
  readonly fragments: FragmentTable;
  /** Basic Offset Table entries (offsets relative to the first fragment's item tag), empty when absent or unusable. */
  basicOffsetTable: number[] = [];
  /** True once the Sequence Delimitation Item has been read. */
  complete = false;

  private readonly itemHeader = Buffer.alloc(8);
  private itemHeaderFill = 0;
  private remaining = 0;
  private itemCount = 0;
  private offsetTable: Buffer | null = null;
  private offsetTableFill = 0;
  private readonly maxOffsetTableBytes: number;

  constructor(
    private readonly littleEndian: boolean,
    limits: { maxFragments: number; maxOffsetTableBytes: number },
  ) {
    this.fragments = new FragmentTable(limits.maxFragments);
    this.maxOffsetTableBytes = limits.maxOffsetTableBytes;
  }

  /**
   * Consumes chunk[start..], where chunk[k] sits at absolute stream offset `base + k`. Returns the
   * index just past the Sequence Delimitation Item, or chunk.length when the value goes on.
   * Throws DicomInstanceError on anything but items.
   */
  push(chunk: Buffer, start: number, base: number): number {
    let i = start;
    const end = chunk.length;
    while (i < end && !this.complete) {
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, end - i);
        this.keepValueBytes(chunk, i, n);
        this.remaining -= n;
        i += n;
        continue;
      }
      const take = Math.min(8 - this.itemHeaderFill, end - i);
      chunk.copy(this.itemHeader, this.itemHeaderFill, i, i + take);
      this.itemHeaderFill += take;
      i += take;
      if (this.itemHeaderFill < 8) break;
      this.itemHeaderFill = 0;
      this.readItemHeader(base + i - 8);
    }
    return i;
  }

  private readItemHeader(itemOffset: number): void {
    const h = this.itemHeader;
    const little = this.littleEndian;
    const tag = (((little ? h.readUInt16LE(0) : h.readUInt16BE(0)) << 16) | (little ? h.readUInt16LE(2) : h.readUInt16BE(2))) >>> 0;
    const length = little ? h.readUInt32LE(4) : h.readUInt32BE(4);
    if (tag === TAG_SEQUENCE_DELIMITATION) {
      this.complete = true;
      this.finishOffsetTable();
      return;
    }
    if (tag !== TAG_ITEM || length === UNDEFINED_LENGTH) {
      throw new DicomInstanceError(`encapsulated Pixel Data: expected an item at byte ${itemOffset}`, StatusCode.CannotUnderstand);
    }
    if (this.itemCount++ === 0) {
      // The first item is the Basic Offset Table: 32-bit offsets, possibly empty (PS3.5 A.4).
      if (length > this.maxOffsetTableBytes) {
        throw new DicomInstanceError(`Basic Offset Table of ${length} bytes is larger than allowed`, StatusCode.OutOfResources);
      }
      if (length > 0 && length % 4 === 0) this.offsetTable = Buffer.alloc(length);
    } else {
      if (this.itemCount === 2) this.finishOffsetTable();
      this.fragments.add(itemOffset, length);
    }
    this.remaining = length;
  }

  private keepValueBytes(chunk: Buffer, i: number, n: number): void {
    if (this.itemCount === 1) {
      if (this.offsetTable) {
        chunk.copy(this.offsetTable, this.offsetTableFill, i, i + n);
        this.offsetTableFill += n;
      }
      return;
    }
    const f = this.fragments.count - 1;
    const missing = FRAGMENT_HEAD_BYTES - this.fragments.headLength(f);
    for (let k = 0; k < missing && k < n; k++) this.fragments.pushHeadByte(chunk[i + k]);
  }

  private finishOffsetTable(): void {
    const table = this.offsetTable;
    if (!table) return;
    this.offsetTable = null;
    const entries: number[] = new Array(table.length / 4);
    for (let k = 0; k < entries.length; k++) entries[k] = this.littleEndian ? table.readUInt32LE(4 * k) : table.readUInt32BE(4 * k);
    this.basicOffsetTable = entries;
  }
}
