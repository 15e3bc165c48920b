/**
 * The start of a DICOM stream: the Part 10 preamble and File Meta Information (PS3.10 7.1), or
 * a bare data set whose encoding must be sniffed from its first element (PS3.5 7.1).
 */
import type { FileMetaInformation } from './types';
import type { RawElement } from './data-set-walker';
import { DataSetEncoding, EXPLICIT_LITTLE, IMPLICIT_LITTLE, TransferSyntaxUid } from './transfer-syntax';
import { KNOWN_VRS, isVrShaped } from './value-representation';

/** 128-byte preamble + "DICM" (PS3.10 7.1). */
export const PART10_PREFIX_LENGTH = 132;

/** True when bytes 128-131 are "DICM". */
export function hasPart10Prefix(buf: Buffer, available: number): boolean {
  return available >= PART10_PREFIX_LENGTH && buf.toString('latin1', 128, 132) === 'DICM';
}

/** True when the bytes at `pos` open a group 0002 element in Explicit VR Little Endian: a meta group without preamble. */
export function startsWithMetaGroup(buf: Buffer, pos: number, available: number): boolean {
  return available >= pos + 6 && buf.readUInt16LE(pos) === 0x0002 && isVrShaped(buf[pos + 4], buf[pos + 5]);
}

/**
 * Guesses the encoding of a data set with no Transfer Syntax: Explicit VR Little Endian when the
 * first element carries a known VR where explicit VR puts it, else Implicit VR Little Endian
 * (PS3.5 A.1, A.2), the default Transfer Syntax.
 */
export function sniffEncoding(buf: Buffer, pos: number, available: number): DataSetEncoding {
  if (available < pos + 6) return IMPLICIT_LITTLE;
  const vr = String.fromCharCode(buf[pos + 4], buf[pos + 5]);
  return KNOWN_VRS.has(vr) ? EXPLICIT_LITTLE : IMPLICIT_LITTLE;
}

/** The Transfer Syntax UID a sniffed encoding stands for. */
export function transferSyntaxOf(encoding: DataSetEncoding): string {
  return encoding.explicitVR ? TransferSyntaxUid.ExplicitVRLittleEndian : TransferSyntaxUid.ImplicitVRLittleEndian;
}

/** Reads the meta values the ingest path checks from the parsed group 0002 (PS3.10 table 7.1-1). */
export function readFileMeta(elements: RawElement[], buf: Buffer): FileMetaInformation {
  const uid = (tag: number): string | null => {
    const element = elements.find((e) => e.tag === tag);
    if (!element || element.length === 0) return null;
    // UIDs are padded with one trailing NUL (PS3.5 9.1); some writers use a space.
    const value = buf.toString('latin1', element.offset, element.offset + element.length).replace(/[\0 ]+$/, '');
    return value === '' ? null : value;
  };
  return {
    mediaStorageSOPClassUID: uid(0x00020002),
    mediaStorageSOPInstanceUID: uid(0x00020003),
    transferSyntaxUID: uid(0x00020010),
  };
}
