import { readJpegFrameHeader } from '../dicom/pixel-decoder';
import type { FrameLocation } from '../dicom/types';
import type { BlobStore } from '../storage/blob-store';

/**
 * The transfer syntax a JPEG frame really is. Some archives label baseline JPEG streams as
 * JPEG Lossless (1.2.840.10008.1.2.4.57/.70); viewers pick their decoder from the
 * transfer-syntax parameter of the frames answer (PS3.18 8.7.3.5.2), so a wrong label shows
 * noise. The stream's first SOF marker (ITU T.81 B.1.1.3) decides: C0 baseline (.50),
 * C1/C2 extended (.51), C3 lossless (stays as labelled). One small ranged read per instance,
 * remembered by content address.
 */
const LOSSLESS_LABELS = new Set(['1.2.840.10008.1.2.4.57', '1.2.840.10008.1.2.4.70']);
const HEAD_BYTES = 16 * 1024;
const MAX_REMEMBERED = 10_000;
const remembered = new Map<string, string>();

/** Returns the syntax to label frames with: the stored one, unless the stream's SOF marker says otherwise. */
export async function effectiveFrameSyntax(blobs: BlobStore, blobKey: string, storedSyntax: string, first: FrameLocation | undefined): Promise<string> {
  if (!LOSSLESS_LABELS.has(storedSyntax) || !first || first.length === 0) return storedSyntax;
  const key = `${blobKey}:${storedSyntax}`;
  const known = remembered.get(key);
  if (known) return known;
  let actual = storedSyntax;
  try {
    const head = first[0];
    const chunks: Buffer[] = [];
    for await (const c of await blobs.readRange(blobKey, head.offset, head.offset + Math.min(head.length, HEAD_BYTES) - 1)) chunks.push(c as Buffer);
    const { marker, precision } = readJpegFrameHeader(Buffer.concat(chunks));
    if (marker === 0xc0 && precision === 8) actual = '1.2.840.10008.1.2.4.50';
    else if (marker === 0xc1 || marker === 0xc2 || (marker === 0xc0 && precision !== 8)) actual = '1.2.840.10008.1.2.4.51';
  } catch {
    return storedSyntax; // unreadable header: keep the stored label, the decoder will say what is wrong
  }
  if (remembered.size >= MAX_REMEMBERED) remembered.delete(remembered.keys().next().value as string);
  remembered.set(key, actual);
  return actual;
}
