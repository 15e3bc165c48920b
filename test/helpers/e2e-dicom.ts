import fs from 'node:fs';
// dcmjs ships no type declarations.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const dcmjs = require('dcmjs');

/**
 * Oracles for the e2e tests, read from the fixture files with dcmjs and a byte walker that do
 * not share code with the server: what a client must get back.
 */

/** A fixture file, its bytes and the attributes the tests assert on. */
export interface Fixture {
  file: string;
  bytes: Buffer;
  studyInstanceUID: string;
  seriesInstanceUID: string;
  sopInstanceUID: string;
  transferSyntaxUID: string;
  dataset: Record<string, any>;
}

/** Reads a DICOM file into a Fixture (naturalized with dcmjs). */
export function readFixture(file: string): Fixture {
  return readFixtureBytes(fs.readFileSync(file), file);
}

/** A Part 10 instance's bytes as a Fixture (a retrieved instance, say; `file` names where they came from). */
export function readFixtureBytes(bytes: Buffer, file = '(bytes)'): Fixture {
  // dcmjs logs odd VRs and lengths (the OP sample's 4-byte AS) through two loggers.
  const loggers = [dcmjs.log, dcmjs.log.getLogger('validation.dcmjs')];
  const levels = loggers.map((l) => l.getLevel());
  loggers.forEach((l) => l.setLevel('silent'));
  try {
    const message = dcmjs.data.DicomMessage.readFile(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
    const dataset = dcmjs.data.DicomMetaDictionary.naturalizeDataset(message.dict);
    return {
      file,
      bytes,
      studyInstanceUID: dataset.StudyInstanceUID,
      seriesInstanceUID: dataset.SeriesInstanceUID,
      sopInstanceUID: dataset.SOPInstanceUID,
      transferSyntaxUID: message.meta['00020010'].Value[0],
      dataset,
    };
  } finally {
    loggers.forEach((l, i) => l.setLevel(levels[i]));
  }
}

/** The native (uncompressed) Pixel Data value of a fixture. */
export function nativePixelData(fixture: Fixture): Buffer {
  return Buffer.from(fixture.dataset.PixelData[0]);
}

/** Fragments of the top-level encapsulated Pixel Data after the Basic Offset Table (PS3.5 A.4). */
export function encapsulatedFragments(file: Buffer): Buffer[] {
  const marker = Buffer.from([0xe0, 0x7f, 0x10, 0x00, 0x4f, 0x42, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff]);
  let pos = file.lastIndexOf(marker) + marker.length;
  const items: Buffer[] = [];
  while (pos + 8 <= file.length && file.readUInt16LE(pos) === 0xfffe && file.readUInt16LE(pos + 2) === 0xe000) {
    const length = file.readUInt32LE(pos + 4);
    items.push(file.subarray(pos + 8, pos + 8 + length));
    pos += 8 + length;
  }
  return items.slice(1);
}

/** The SOF marker of a JPEG stream (FFC0 baseline, FFC1 extended, FFC3 lossless, ...). */
export function jpegFrameMarker(stream: Buffer): number {
  let pos = 2;
  while (pos + 4 <= stream.length && stream[pos] === 0xff) {
    const marker = stream[pos + 1];
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) return marker;
    pos += 2 + stream.readUInt16BE(pos + 2);
  }
  throw new Error('JPEG stream without a frame header');
}
