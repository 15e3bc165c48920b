/**
 * The streaming scanner of one DICOM instance (a STOW-RS part, PS3.18 10.5): a Writable that
 * the part's bytes are teed into while they also go to the blob store. Only the header (bytes
 * before the top-level Pixel Data) is buffered; pixel data is counted, and for encapsulated
 * data its item headers are read on the fly to record where each fragment is.
 *
 * The Writable never errors and never stops draining: an instance it cannot understand rejects
 * `result` with a DicomInstanceError once the part has ended.
 */
import { Writable } from 'node:stream';
import { DicomInstanceError, ScannedInstance, StatusCode } from './types';
import { InstanceScan } from './instance-scan';

export interface ScannerOptions {
  /** Header (everything before the top-level Pixel Data) larger than this is refused with 0xA700. Also caps inflation of deflated data sets. */
  maxHeaderBytes: number;
  /** Sequence nesting deeper than this is refused with 0xC000. Default 128; DICOM JSON conversion recurses per level, so keep it modest. */
  maxSequenceDepth?: number;
  /** Header elements + items beyond this are refused with 0xA700. Default 1,000,000. */
  maxElements?: number;
  /** Pixel Data fragments beyond this are refused with 0xA700. Default 4,000,000. */
  maxFragments?: number;
}

/** Consumes one instance's bytes as they stream in (a STOW part) and resolves what the index needs (PS3.18 10.5). */
export function createInstanceScanner(opts: ScannerOptions): { writable: Writable; result: Promise<ScannedInstance> } {
  const scan = new InstanceScan({ maxSequenceDepth: 128, maxElements: 1_000_000, maxFragments: 4_000_000, ...opts });
  let settle!: (outcome: ScannedInstance | DicomInstanceError) => void;
  let settled = false;
  const result = new Promise<ScannedInstance>((resolve, reject) => {
    settle = (outcome) => {
      if (settled) return;
      settled = true;
      if (outcome instanceof DicomInstanceError) reject(outcome);
      else resolve(outcome);
    };
  });
  // Rejection is an expected outcome that callers may only await later: never let it count as unhandled.
  result.catch(() => undefined);

  let outcome: ScannedInstance | DicomInstanceError | null = null;
  const writable = new Writable({
    // Above a socket read (64 KiB): with the default 16 KiB every chunk would report "full" and
    // cost the tee a wait for 'drain', though the scan takes each chunk at once.
    highWaterMark: 1024 * 1024,
    write(chunk: Buffer, _encoding, callback) {
      scan.write(chunk, () => callback());
    },
    final(callback) {
      scan
        .finish()
        .catch((err: Error) => new DicomInstanceError(`instance could not be scanned: ${err.message}`, StatusCode.ProcessingFailure))
        .then((o) => {
          outcome = o;
          callback();
        });
    },
  });
  writable.once('finish', () => settle(outcome!));
  // Destroyed before the end (aborted request): the instance is incomplete.
  // (The error, with its stack trace, is only made when it is the outcome: every part closes.)
  writable.once('close', () => {
    if (!settled) settle(new DicomInstanceError('the part ended before all of its bytes arrived', StatusCode.CannotUnderstand));
  });
  // Whoever destroys us with an error owns that error; it must not crash the process for lack of a listener.
  writable.on('error', () => undefined);
  return { writable, result };
}

