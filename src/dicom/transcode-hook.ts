/**
 * The WADO-RS transcode hook (TranscodeHook of src/dicomweb/wado-rs.ts): converts any decodable
 * stored Transfer Syntax to Explicit VR Little Endian with native pixels, for whole instances
 * (streamed frame by frame) and for single frames.
 */
import type { Database } from '../db/database';
import { findPixelInstance } from '../db/rendered-index';
import type { PixelDescription } from '../db/wado-index';
import type { TranscodeHook } from '../dicomweb/wado-rs';
import type { BlobStore } from '../storage/blob-store';
import { canDecodeTransferSyntax, decodeFrame } from './pixel-decoder';
import { PixelSyntax, UnsupportedTransferSyntaxError, type PixelAttributes } from './pixel-frame';
import { readPixelAttributes } from './pixel-presentation';
import { canTranscodeToExplicitLittleEndian, transcodeInstanceToExplicitLittleEndian } from './transcode';

const TARGET = PixelSyntax.ExplicitVRLittleEndian;

/** Creates the hook; wire it as `transcoder` in the WADO-RS services. */
export function createTranscodeHook(deps: { db: Database; blobs: BlobStore }): TranscodeHook {
  return {
    canTranscode(from, to) {
      return to === TARGET && canTranscodeToExplicitLittleEndian(from);
    },

    async transcodeInstance({ instance }, to) {
      if (to !== TARGET || !canDecodeTransferSyntax(instance.transferSyntaxUID)) throw new UnsupportedTransferSyntaxError(instance.transferSyntaxUID);
      const row = await findPixelInstance(deps.db.knex, instance.sopInstanceUID, instance.blobKey);
      if (!row) throw new Error(`instance ${instance.sopInstanceUID} (blob ${instance.blobKey}) is no longer indexed`);
      const pixel = readPixelAttributes(row.dataset);
      return transcodeInstanceToExplicitLittleEndian(deps.blobs, {
        ...row,
        pixel: pixel.rows > 0 && pixel.columns > 0 && pixel.bitsAllocated > 0 ? pixel : null,
      });
    },

    async transcodeFrame({ frame, from, pixel }, to) {
      if (to !== TARGET) throw new UnsupportedTransferSyntaxError(from, `frames are only converted to ${TARGET}`);
      const decoded = await decodeFrame(frame, from, attributesOf(pixel));
      return decoded.data;
    },
  };
}

/** PixelDescription (nullable columns of the index) to decoder attributes, with PS3.3 defaults for optional ones. */
export function attributesOf(p: PixelDescription): PixelAttributes {
  const bitsAllocated = p.bitsAllocated ?? 0;
  return {
    rows: p.rows ?? 0,
    columns: p.columns ?? 0,
    samplesPerPixel: p.samplesPerPixel ?? 1,
    bitsAllocated,
    bitsStored: p.bitsStored ?? bitsAllocated,
    pixelRepresentation: p.pixelRepresentation ?? 0,
    planarConfiguration: p.planarConfiguration ?? 0,
    photometricInterpretation: (p.photometricInterpretation ?? 'MONOCHROME2').trim().toUpperCase(),
  };
}
