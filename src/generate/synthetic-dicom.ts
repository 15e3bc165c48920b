import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
// dcmjs ships no type declarations.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const dcmjs = require('dcmjs');

/**
 * Synthetic DICOM instances for tests, benchmarks and `imaging-lake generate`: valid Part 10
 * files in Explicit VR Little Endian with chosen UIDs, demographics and pixel geometry.
 * No real patient data is involved anywhere.
 */
export interface SyntheticInstanceOptions {
  studyInstanceUID?: string;
  seriesInstanceUID?: string;
  sopInstanceUID?: string;
  /** Default: CT Image Storage. */
  sopClassUID?: string;
  modality?: string;
  patientID?: string;
  issuerOfPatientID?: string;
  patientName?: string;
  patientBirthDate?: string;
  patientSex?: string;
  studyDate?: string;
  studyTime?: string;
  accessionNumber?: string;
  studyDescription?: string;
  seriesDescription?: string;
  seriesNumber?: number;
  instanceNumber?: number;
  laterality?: string;
  imageLaterality?: string;
  manufacturer?: string;
  manufacturerModelName?: string;
  rows?: number;
  columns?: number;
  numberOfFrames?: number;
  bitsAllocated?: 8 | 16;
  samplesPerPixel?: 1 | 3;
  /** Extra attributes in dcmjs naturalized form (keyword -> value). */
  extra?: Record<string, unknown>;
  /** Fill byte pattern seed: different seeds give different pixel bytes. */
  seed?: number;
  /** false: no Pixel Data and no image pixel attributes (measurement objects such as visual fields). */
  pixelData?: boolean;
}

const CT_IMAGE_STORAGE = '1.2.840.10008.5.1.4.1.1.2';
const EXPLICIT_VR_LE = '1.2.840.10008.1.2.1';

/** A fresh UID under the 2.25 root (PS3.5 B.2: a UUID as a decimal integer). */
export function newUid(): string {
  return `2.25.${BigInt(`0x${randomUUID().replace(/-/g, '')}`).toString(10)}`;
}

/** Number of pixel data bytes the options describe. */
export function pixelDataLength(o: SyntheticInstanceOptions): number {
  if (o.pixelData === false) return 0;
  const rows = o.rows ?? 64;
  const cols = o.columns ?? 64;
  const bytes = (o.bitsAllocated ?? 16) / 8;
  const len = rows * cols * bytes * (o.samplesPerPixel ?? 1) * (o.numberOfFrames ?? 1);
  return len + (len % 2);
}

/** Builds the header (everything up to the Pixel Data element) and the resolved options. */
function buildHeader(o: SyntheticInstanceOptions): { header: Buffer; resolved: Required<Pick<SyntheticInstanceOptions, 'sopInstanceUID' | 'sopClassUID' | 'studyInstanceUID' | 'seriesInstanceUID'>> } {
  const sopInstanceUID = o.sopInstanceUID ?? newUid();
  const sopClassUID = o.sopClassUID ?? CT_IMAGE_STORAGE;
  const studyInstanceUID = o.studyInstanceUID ?? newUid();
  const seriesInstanceUID = o.seriesInstanceUID ?? newUid();
  const bits = o.bitsAllocated ?? 16;
  const spp = o.samplesPerPixel ?? 1;
  const natural: Record<string, unknown> = {
    SpecificCharacterSet: 'ISO_IR 192',
    SOPClassUID: sopClassUID,
    SOPInstanceUID: sopInstanceUID,
    StudyDate: o.studyDate ?? '20240115',
    StudyTime: o.studyTime ?? '101500',
    AccessionNumber: o.accessionNumber ?? '',
    Modality: o.modality ?? 'CT',
    Manufacturer: o.manufacturer ?? 'imaging-lake synthetic',
    ManufacturerModelName: o.manufacturerModelName ?? 'SYNTH-1',
    StudyDescription: o.studyDescription ?? 'Synthetic study',
    SeriesDescription: o.seriesDescription ?? 'Synthetic series',
    PatientName: o.patientName ?? 'Synthetic^Patient',
    PatientID: o.patientID ?? 'SYN-0001',
    IssuerOfPatientID: o.issuerOfPatientID ?? 'IMAGING-LAKE-SYNTH',
    PatientBirthDate: o.patientBirthDate ?? '19700101',
    PatientSex: o.patientSex ?? 'O',
    StudyInstanceUID: studyInstanceUID,
    SeriesInstanceUID: seriesInstanceUID,
    StudyID: '1',
    SeriesNumber: o.seriesNumber ?? 1,
    InstanceNumber: o.instanceNumber ?? 1,
    ...(o.pixelData === false
      ? {}
      : {
          SamplesPerPixel: spp,
          PhotometricInterpretation: spp === 3 ? 'RGB' : 'MONOCHROME2',
          Rows: o.rows ?? 64,
          Columns: o.columns ?? 64,
          BitsAllocated: bits,
          BitsStored: bits,
          HighBit: bits - 1,
          PixelRepresentation: 0,
          ...(spp === 3 ? { PlanarConfiguration: 0 } : {}),
          ...(o.numberOfFrames && o.numberOfFrames > 1 ? { NumberOfFrames: String(o.numberOfFrames) } : {}),
        }),
    ...(o.laterality ? { Laterality: o.laterality } : {}),
    ...(o.imageLaterality ? { ImageLaterality: o.imageLaterality } : {}),
    ...(o.extra ?? {}),
  };
  const meta = {
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: sopClassUID,
    MediaStorageSOPInstanceUID: sopInstanceUID,
    TransferSyntaxUID: EXPLICIT_VR_LE,
    ImplementationClassUID: '2.25.1234567890123456789',
    ImplementationVersionName: 'IMAGING_LAKE',
  };
  const { DicomDict, DicomMetaDictionary } = dcmjs.data;
  const dict = new DicomDict(DicomMetaDictionary.denaturalizeDataset(meta));
  dict.dict = DicomMetaDictionary.denaturalizeDataset(natural);
  const header = Buffer.from(dict.write());
  return { header, resolved: { sopInstanceUID, sopClassUID, studyInstanceUID, seriesInstanceUID } };
}

/** Pixel Data element header: (7FE0,0010) OW or OB, explicit 32-bit length (PS3.5 7.1.2). */
function pixelDataElementHeader(length: number, bits: number): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16LE(0x7fe0, 0);
  h.writeUInt16LE(0x0010, 2);
  h.write(bits > 8 ? 'OW' : 'OB', 4, 'latin1');
  h.writeUInt32LE(length, 8);
  return h;
}

function fillPixels(buf: Buffer, start: number, seed: number): void {
  // A cheap, deterministic, non-constant pattern (so different seeds differ and compression is not trivial).
  let x = (seed * 2654435761 + start) >>> 0;
  for (let i = 0; i < buf.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    buf[i] = (x >>> 16) & 0xff;
  }
}

/** A complete synthetic instance in memory, with the UIDs it got. */
export function createSyntheticInstance(o: SyntheticInstanceOptions = {}): { bytes: Buffer; sopInstanceUID: string; sopClassUID: string; studyInstanceUID: string; seriesInstanceUID: string } {
  const { header, resolved } = buildHeader(o);
  if (o.pixelData === false) return { bytes: header, ...resolved };
  const len = pixelDataLength(o);
  const pixels = Buffer.alloc(len);
  fillPixels(pixels, 0, o.seed ?? 1);
  return { bytes: Buffer.concat([header, pixelDataElementHeader(len, o.bitsAllocated ?? 16), pixels]), ...resolved };
}

/**
 * A synthetic instance as a stream: header first, then pixel data generated chunk by chunk,
 * so instances of several GB never sit in memory. Returns the total size in advance.
 */
export function streamSyntheticInstance(o: SyntheticInstanceOptions = {}, chunkSize = 1024 * 1024): { stream: Readable; size: number; sopInstanceUID: string; studyInstanceUID: string; seriesInstanceUID: string } {
  const { header, resolved } = buildHeader(o);
  const len = pixelDataLength(o);
  const prefix = o.pixelData === false ? header : Buffer.concat([header, pixelDataElementHeader(len, o.bitsAllocated ?? 16)]);
  const block = Buffer.alloc(chunkSize);
  fillPixels(block, 0, o.seed ?? 1);
  let sent = 0;
  let headerSent = false;
  const stream = new Readable({
    read() {
      if (!headerSent) {
        headerSent = true;
        this.push(prefix);
        return;
      }
      if (sent >= len) {
        this.push(null);
        return;
      }
      const n = Math.min(chunkSize, len - sent);
      sent += n;
      this.push(n === chunkSize ? Buffer.from(block) : block.subarray(0, n));
    },
  });
  return { stream, size: prefix.length + len, ...resolved };
}
