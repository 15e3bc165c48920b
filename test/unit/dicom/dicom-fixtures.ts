/**
 * Test helpers for the DICOM scanner: the shared sample files, a chunked feeder, and a tiny
 * encoder to generate edge-case instances (PS3.5 7.1 element encodings, PS3.10 7.1 meta).
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { gunzipSync } from 'node:zlib';
import { createInstanceScanner, ScannerOptions } from '../../../src/dicom/instance-scanner';
import type { ScannedInstance } from '../../../src/dicom/types';

export const SHARED_DICOM = resolve(__dirname, '../../../../shared/data/dicom');

/** All files under a folder, sorted, as paths relative to SHARED_DICOM. */
export function listSharedFiles(folder = ''): string[] {
  const walk = (dir: string): string[] =>
    readdirSync(dir)
      .sort()
      .flatMap((name) => {
        const path = join(dir, name);
        return statSync(path).isDirectory() ? walk(path) : [path];
      });
  return walk(join(SHARED_DICOM, folder)).map((p) => p.slice(SHARED_DICOM.length + 1));
}

/** Bytes of a shared file; `.gz` files are gunzipped (nibabel ships one that way). */
export function readShared(relative: string): Buffer {
  const bytes = readFileSync(join(SHARED_DICOM, relative));
  return relative.endsWith('.gz') ? gunzipSync(bytes) : bytes;
}

function* chunksOf(bytes: Buffer, size: number): Generator<Buffer> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

/** Pipes `bytes` through a scanner in chunks of `chunkSize` (honouring backpressure) and returns its result promise. */
export async function scanBytes(bytes: Buffer, chunkSize = 64 * 1024, options: Partial<ScannerOptions> = {}): Promise<ScannedInstance> {
  const scanner = createInstanceScanner({ maxHeaderBytes: 64 * 1024 * 1024, ...options });
  await pipeline(Readable.from(chunksOf(bytes, chunkSize), { objectMode: false }), scanner.writable);
  return scanner.result;
}

/** The failure reason a scan rejects with, or 'accepted'. */
export async function scanOutcome(bytes: Buffer, chunkSize?: number, options?: Partial<ScannerOptions>): Promise<number | 'accepted'> {
  try {
    await scanBytes(bytes, chunkSize, options);
    return 'accepted';
  } catch (err) {
    return (err as { failureReason: number }).failureReason;
  }
}

// ---- a tiny encoder for generated instances ----

export const UNDEFINED = 0xffffffff;
const LONG = new Set('OB OD OF OL OV OW SQ UC UN UR UT SV UV'.split(' '));

export interface Encoding {
  explicit: boolean;
  little: boolean;
}
export const EXPLICIT_LE: Encoding = { explicit: true, little: true };
export const IMPLICIT_LE: Encoding = { explicit: false, little: true };
export const EXPLICIT_BE: Encoding = { explicit: true, little: false };

function u16(n: number, little = true): Buffer {
  const b = Buffer.alloc(2);
  if (little) b.writeUInt16LE(n);
  else b.writeUInt16BE(n);
  return b;
}

function u32(n: number, little = true): Buffer {
  const b = Buffer.alloc(4);
  if (little) b.writeUInt32LE(n);
  else b.writeUInt32BE(n);
  return b;
}

/** Encodes one element; `length` overrides the value length (e.g. UNDEFINED). */
export function element(tag: number, vr: string, value: Buffer, enc: Encoding = EXPLICIT_LE, length = value.length): Buffer {
  const head = [u16(tag >>> 16, enc.little), u16(tag & 0xffff, enc.little)];
  if (!enc.explicit) return Buffer.concat([...head, u32(length, enc.little), value]);
  if (LONG.has(vr)) return Buffer.concat([...head, Buffer.from(vr), Buffer.alloc(2), u32(length, enc.little), value]);
  return Buffer.concat([...head, Buffer.from(vr), u16(length, enc.little), value]);
}

/** A text value padded to even length (UIDs with NUL, others with space, PS3.5 6.2). */
export function text(value: string, pad = ' '): Buffer {
  return Buffer.from(value.length % 2 ? value + pad : value, 'latin1');
}

export function uid(value: string): Buffer {
  return text(value, '\0');
}

export function us(...values: number[]): Buffer {
  return Buffer.concat(values.map((v) => u16(v)));
}

/** An item, of defined length unless `undefinedLength` (then closed by an Item Delimitation Item). */
export function item(content: Buffer, undefinedLength = false, little = true): Buffer {
  const tag = Buffer.concat([u16(0xfffe, little), u16(0xe000, little)]);
  if (!undefinedLength) return Buffer.concat([tag, u32(content.length, little), content]);
  return Buffer.concat([tag, u32(UNDEFINED, little), content, u16(0xfffe, little), u16(0xe00d, little), u32(0, little)]);
}

/** A sequence of items, of defined or undefined length (PS3.5 7.5). */
export function sequence(tag: number, items: Buffer[], undefinedLength = false, enc: Encoding = EXPLICIT_LE): Buffer {
  const body = Buffer.concat(items);
  if (!undefinedLength) return element(tag, 'SQ', body, enc);
  const delimiter = Buffer.concat([u16(0xfffe, enc.little), u16(0xe0dd, enc.little), u32(0, enc.little)]);
  return Buffer.concat([element(tag, 'SQ', body, enc, UNDEFINED), delimiter]);
}

/** Encapsulated Pixel Data (PS3.5 A.4): Basic Offset Table item, fragments, Sequence Delimitation Item. */
export function encapsulatedPixelData(fragments: Buffer[], basicOffsetTable: number[] = []): Buffer {
  const bot = Buffer.concat(basicOffsetTable.map((o) => u32(o)));
  const items = [item(bot), ...fragments.map((f) => item(f))];
  return Buffer.concat([element(0x7fe00010, 'OB', Buffer.alloc(0), EXPLICIT_LE, UNDEFINED), ...items, u16(0xfffe), u16(0xe0dd), u32(0)]);
}

export const SOP_CLASS_CT = '1.2.840.10008.5.1.4.1.1.2';
export const IDS = { sopInstance: '1.2.826.0.1.3680043.2.1125.1.1', study: '1.2.826.0.1.3680043.2.1125.1', series: '1.2.826.0.1.3680043.2.1125.1.2' };

/** The identifying elements every storable test instance needs. */
export function identity(enc: Encoding = EXPLICIT_LE): Buffer {
  return Buffer.concat([
    element(0x00080016, 'UI', uid(SOP_CLASS_CT), enc),
    element(0x00080018, 'UI', uid(IDS.sopInstance), enc),
    element(0x0020000d, 'UI', uid(IDS.study), enc),
    element(0x0020000e, 'UI', uid(IDS.series), enc),
  ]);
}

/** Image Pixel module attributes (PS3.3 C.7.6.3) for a native image. */
export function imagePixel(rows: number, columns: number, bitsAllocated: number, frames?: number, enc: Encoding = EXPLICIT_LE): Buffer {
  return Buffer.concat([
    element(0x00280002, 'US', us(1), enc),
    ...(frames === undefined ? [] : [element(0x00280008, 'IS', text(String(frames)), enc)]),
    element(0x00280010, 'US', us(rows), enc),
    element(0x00280011, 'US', us(columns), enc),
    element(0x00280100, 'US', us(bitsAllocated), enc),
  ]);
}

/** Preamble + DICM + a File Meta group with the given Transfer Syntax (PS3.10 7.1), then the data set. */
export function part10(transferSyntax: string, dataSet: Buffer): Buffer {
  const meta = Buffer.concat([
    element(0x00020002, 'UI', uid(SOP_CLASS_CT)),
    element(0x00020003, 'UI', uid(IDS.sopInstance)),
    element(0x00020010, 'UI', uid(transferSyntax)),
  ]);
  return Buffer.concat([Buffer.alloc(128), Buffer.from('DICM'), element(0x00020000, 'UL', u32(meta.length)), meta, dataSet]);
}
