/**
 * What the scanner needs to know about a Transfer Syntax: how the data set is encoded and how
 * encapsulated frames can be recognised (PS3.5 section 10 and Annex A).
 */

/** Transfer Syntax UIDs the scanner handles by name (PS3.6 Annex A, table A-1). */
export const TransferSyntaxUid = {
  ImplicitVRLittleEndian: '1.2.840.10008.1.2',
  ExplicitVRLittleEndian: '1.2.840.10008.1.2.1',
  EncapsulatedUncompressedExplicitVRLittleEndian: '1.2.840.10008.1.2.1.98',
  DeflatedExplicitVRLittleEndian: '1.2.840.10008.1.2.1.99',
  ExplicitVRBigEndian: '1.2.840.10008.1.2.2',
} as const;

/** How the elements of a data set are laid out (PS3.5 7.1). */
export interface DataSetEncoding {
  explicitVR: boolean;
  littleEndian: boolean;
}

export const IMPLICIT_LITTLE: DataSetEncoding = { explicitVR: false, littleEndian: true };
export const EXPLICIT_LITTLE: DataSetEncoding = { explicitVR: true, littleEndian: true };
export const EXPLICIT_BIG: DataSetEncoding = { explicitVR: true, littleEndian: false };

/**
 * Marker that opens every frame's first fragment, when the codec has one: JPEG and JPEG-LS
 * streams start with SOI (FFD8), JPEG 2000 / HTJ2K code streams with SOC + SIZ (FF4F FF51).
 */
export type FrameStartMarker = 'jpeg-soi' | 'j2k-soc' | null;

export interface TransferSyntaxTraits {
  encoding: DataSetEncoding;
  /** The data set after the File Meta Information is one raw deflate stream (PS3.5 A.5). */
  deflated: boolean;
  frameStartMarker: FrameStartMarker;
  /** MPEG-2 / MPEG-4 / HEVC: the fragments are one video bit stream, frames cannot be cut out (PS3.5 8.2.5). */
  video: boolean;
}

const JPEG_PREFIX = '1.2.840.10008.1.2.4.';

/** Classifies a Transfer Syntax UID (PS3.5 10, A.4); unknown UIDs are read as Explicit VR Little Endian, which every non-retired syntax added since uses. */
export function describeTransferSyntax(uid: string): TransferSyntaxTraits {
  const traits: TransferSyntaxTraits = {
    encoding: EXPLICIT_LITTLE,
    deflated: false,
    frameStartMarker: null,
    video: false,
  };
  if (uid === TransferSyntaxUid.ImplicitVRLittleEndian) traits.encoding = IMPLICIT_LITTLE;
  else if (uid === TransferSyntaxUid.ExplicitVRBigEndian) traits.encoding = EXPLICIT_BIG;
  else if (uid === TransferSyntaxUid.DeflatedExplicitVRLittleEndian) traits.deflated = true;
  else if (uid.startsWith(JPEG_PREFIX)) {
    const n = Number(uid.slice(JPEG_PREFIX.length));
    // .50-.66 JPEG processes, .70 JPEG lossless SV1, .80/.81 JPEG-LS: all open with SOI.
    if ((n >= 50 && n <= 70) || n === 80 || n === 81) traits.frameStartMarker = 'jpeg-soi';
    // .90-.93 JPEG 2000, .201-.203 HTJ2K: code streams open with SOC.
    else if ((n >= 90 && n <= 93) || (n >= 201 && n <= 203)) traits.frameStartMarker = 'j2k-soc';
    else if (n >= 100 && n <= 108) traits.video = true;
  }
  return traits;
}
