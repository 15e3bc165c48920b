/**
 * Shared shapes of the DICOM ingest path: what the streaming scanner learns about one
 * instance while its bytes flow to the blob store.
 */

/** A DICOM JSON element (PS3.18 F.2.2). */
export interface DicomJsonElement {
  vr: string;
  Value?: unknown[];
  InlineBinary?: string;
  /** For bulk values: a path relative to the instance, `bulkdata/<tag path>`, resolved at retrieve time. */
  BulkDataURI?: string;
}

/** A DICOM JSON dataset (PS3.18 F.2): tag (8 upper-case hex digits) -> element. */
export type DicomJson = Record<string, DicomJsonElement>;

/** One byte range inside a stored blob (absolute offsets from the first byte of the blob). */
export interface ByteRange {
  offset: number;
  length: number;
}

/**
 * Where one frame's bytes live in the blob.
 * Native pixel data: one range. Encapsulated: the fragments of the frame, in order
 * (item headers excluded). `null` when the frame cannot be cut out by ranges
 * (e.g. BitsAllocated 1 with frames not byte aligned, or a deflated data set).
 */
export type FrameLocation = ByteRange[] | null;

/** Typed values that the index keeps in columns (QIDO-RS, FHIR search). Strings are raw DICOM values, trimmed. */
export interface InstanceAttributes {
  studyInstanceUID: string;
  seriesInstanceUID: string;
  sopInstanceUID: string;
  sopClassUID: string;
  transferSyntaxUID: string;
  specificCharacterSet: string | null;

  patientID: string | null;
  issuerOfPatientID: string | null;
  /** PN as DICOM string form (Alphabetic=Ideographic=Phonetic joined by '='). */
  patientName: string | null;
  /** YYYYMMDD */
  patientBirthDate: string | null;
  patientSex: string | null;

  /** YYYYMMDD */
  studyDate: string | null;
  /** HHMMSS.FFFFFF (as given) */
  studyTime: string | null;
  accessionNumber: string | null;
  studyID: string | null;
  studyDescription: string | null;
  referringPhysicianName: string | null;
  institutionName: string | null;

  modality: string | null;
  seriesNumber: number | null;
  seriesDescription: string | null;
  seriesDate: string | null;
  seriesTime: string | null;
  bodyPartExamined: string | null;
  /** (0020,0060) Laterality, series level: R, L */
  laterality: string | null;
  manufacturer: string | null;
  manufacturerModelName: string | null;
  stationName: string | null;
  /** CodeValue of each item of AcquisitionDeviceTypeCodeSequence (0022,0015) */
  acquisitionDeviceTypeCodes: string[];
  performedProcedureStepStartDate: string | null;
  performedProcedureStepStartTime: string | null;

  instanceNumber: number | null;
  /** (0020,0062) ImageLaterality: R, L, U, B */
  imageLaterality: string | null;
  /** Distinct FrameLaterality (0020,9072) values found in the Shared and Per-Frame Functional Groups */
  frameLateralities: string[];
  numberOfFrames: number | null;
  rows: number | null;
  columns: number | null;
  bitsAllocated: number | null;
  bitsStored: number | null;
  samplesPerPixel: number | null;
  photometricInterpretation: string | null;
  contentDate: string | null;
  contentTime: string | null;
  acquisitionDateTime: string | null;
}

/** File Meta Information values that the ingest path checks (PS3.10 7.1); null when absent or empty. */
export interface FileMetaInformation {
  mediaStorageSOPClassUID: string | null;
  mediaStorageSOPInstanceUID: string | null;
  /** As written in the meta; null when missing (the scanner then sniffed the data set's encoding). */
  transferSyntaxUID: string | null;
}

/** What the scanner hands back once the whole part has gone through it. */
export interface ScannedInstance {
  /** Full header as DICOM JSON, file meta (group 0002) excluded, bulk values replaced by BulkDataURI. */
  dataset: DicomJson;
  attributes: InstanceAttributes;
  /** Frame locations (length = NumberOfFrames, or 1 for single-frame images); empty when no pixel data. */
  frames: FrameLocation[];
  /** Byte offset of the first byte of the top-level Pixel Data element's value, or null (also for a deflated data set). */
  pixelDataOffset: number | null;
  /** Byte offset where the header ends (the top-level Pixel Data tag, or end of stream; end of stream for a deflated data set, whose header is only readable by inflating from the start). */
  headerLength: number;
  /** Whether the bytes start with a 128-byte preamble + "DICM" + File Meta Information. */
  hasFileMeta: boolean;
  /** Total number of bytes that went through the scanner. */
  size: number;
  /** The File Meta Information group, when the bytes had one (with or without preamble). */
  fileMeta?: FileMetaInformation;
}

/** PS3.4 / PS3.18 status codes used as Failure Reason (0008,1197, STOW-RS and Storage Commitment) and Warning Reason (0008,1196). */
export const StatusCode = {
  ProcessingFailure: 0x0110,
  NoSuchObjectInstance: 0x0112,
  ClassInstanceConflict: 0x0119,
  NoSuchSopClass: 0x0122,
  NotAuthorized: 0x0124,
  OutOfResources: 0xa700,
  DataSetDoesNotMatchSopClass: 0xa900,
  CannotUnderstand: 0xc000,
  CoercionOfDataElements: 0xb000,
  ElementsDiscarded: 0xb006,
  DataSetDoesNotMatchSopClassWarning: 0xb007,
} as const;

/** An instance the server cannot accept, carrying the failure reason to report. */
export class DicomInstanceError extends Error {
  constructor(
    message: string,
    readonly failureReason: number = StatusCode.CannotUnderstand,
  ) {
    super(message);
    this.name = 'DicomInstanceError';
  }
}
