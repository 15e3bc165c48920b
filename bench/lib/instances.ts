import { createSyntheticInstance, newUid, type SyntheticInstanceOptions } from '../../src/generate/synthetic-dicom';

/**
 * The instances the STOW benchmark sends: CT-like slices, ophthalmic tomography volumes and
 * one very large instance, all built with the project's synthetic generator (no PHI).
 */

/** Ophthalmic Tomography Image Storage (PS3.4 B.5, PS3.3 A.39). */
export const OPHTHALMIC_TOMOGRAPHY_IMAGE_STORAGE = '1.2.840.10008.5.1.4.1.1.77.1.5.4';
/** CT Image Storage. */
export const CT_IMAGE_STORAGE = '1.2.840.10008.5.1.4.1.1.2';
/** Multi-frame Grayscale Byte Secondary Capture Image Storage: a plain carrier for a huge pixel payload. */
export const MULTIFRAME_GRAYSCALE_BYTE_SC = '1.2.840.10008.5.1.4.1.1.7.2';

/** 128 x 128 x 16-bit: 32 KiB of pixels plus a ~1 KB header. */
const CT_ROWS = 128;
const CT_COLUMNS = 128;

/**
 * CT slices grouped in series of `seriesSize` (one study and patient per series), as a
 * modality would send them. Each slice has its own UID and pixel seed, so no bytes repeat.
 */
export function createCtSlices(count: number, seriesSize: number, tag: string): Buffer[] {
  const out: Buffer[] = [];
  let study = '';
  let series = '';
  let patient = '';
  for (let i = 0; i < count; i++) {
    const n = i % seriesSize;
    if (n === 0) {
      study = newUid();
      series = newUid();
      patient = `BENCH-${tag}-${Math.floor(i / seriesSize)}`;
    }
    const o: SyntheticInstanceOptions = {
      ...ctSliceOptions(i, n + 1, tag),
      studyInstanceUID: study,
      seriesInstanceUID: series,
      patientID: patient,
      patientName: `Bench^${tag}^${Math.floor(i / seriesSize)}`,
    };
    out.push(createSyntheticInstance(o).bytes);
  }
  return out;
}

/** One CT-like slice (`instanceNumber` 1-based, `seed` makes its pixel bytes its own); UIDs and patient are the caller's. */
export function ctSliceOptions(seed: number, instanceNumber: number, tag: string): SyntheticInstanceOptions {
  const n = instanceNumber - 1;
  return {
    sopClassUID: CT_IMAGE_STORAGE,
    modality: 'CT',
    patientName: `Bench^${tag}`,
    studyDescription: 'Benchmark CT',
    seriesDescription: 'Axial 1.0',
    seriesNumber: 1,
    instanceNumber,
    manufacturer: 'imaging-lake synthetic',
    manufacturerModelName: 'SYNTH-CT',
    rows: CT_ROWS,
    columns: CT_COLUMNS,
    bitsAllocated: 16,
    seed: seed + 1,
    extra: {
      ImageType: ['ORIGINAL', 'PRIMARY', 'AXIAL'],
      BodyPartExamined: 'CHEST',
      KVP: 120,
      SliceThickness: 1,
      PixelSpacing: [0.7, 0.7],
      ImagePositionPatient: [-180, -180, -n],
      ImageOrientationPatient: [1, 0, 0, 0, 1, 0],
      SliceLocation: -n,
      RescaleIntercept: -1024,
      RescaleSlope: 1,
      WindowCenter: 40,
      WindowWidth: 400,
      ContentDate: '20240115',
      ContentTime: '101500',
    },
  };
}

/** Frames, rows and columns of the OCT volume: 61 B-scans of 496 x 768, 8-bit. */
export const OCT_GEOMETRY = { frames: 61, rows: 496, columns: 768 } as const;

/**
 * One ophthalmic tomography volume (Modality OPT, PS3.3 A.39) with the attributes the index
 * keeps typed columns for: laterality, frame laterality and the acquisition device type code.
 */
export function octVolumeOptions(i: number, tag: string): SyntheticInstanceOptions {
  const eye = i % 2 === 0 ? 'R' : 'L';
  const { frames, rows, columns } = OCT_GEOMETRY;
  const perFrame = Array.from({ length: frames }, (_, f) => ({
    FrameContentSequence: [{ StackID: '1', InStackPositionNumber: f + 1, DimensionIndexValues: [1, f + 1] }],
  }));
  return {
    sopClassUID: OPHTHALMIC_TOMOGRAPHY_IMAGE_STORAGE,
    modality: 'OPT',
    patientID: `BENCH-OCT-${tag}-${Math.floor(i / 2)}`,
    patientName: `Bench^OCT^${tag}`,
    studyDescription: 'Benchmark OCT macula',
    seriesDescription: `Macular cube ${eye === 'R' ? 'OD' : 'OS'}`,
    manufacturer: 'Heidelberg Engineering',
    manufacturerModelName: 'SPECTRALIS',
    laterality: eye,
    imageLaterality: eye,
    rows,
    columns,
    numberOfFrames: frames,
    bitsAllocated: 8,
    samplesPerPixel: 1,
    seed: 1000 + i,
    extra: {
      ImageType: ['ORIGINAL', 'PRIMARY'],
      AcquisitionDeviceTypeCodeSequence: [
        { CodeValue: 'A-00FBE', CodingSchemeDesignator: 'SRT', CodeMeaning: 'Optical Coherence Tomography Scanner' },
      ],
      AnatomicRegionSequence: [{ CodeValue: 'T-AA610', CodingSchemeDesignator: 'SRT', CodeMeaning: 'Retina' }],
      ContentDate: '20240115',
      ContentTime: '101500',
      AcquisitionDateTime: '20240115101500',
      BurnedInAnnotation: 'NO',
      PresentationLUTShape: 'IDENTITY',
      SharedFunctionalGroupsSequence: [
        {
          PixelMeasuresSequence: [{ PixelSpacing: [0.0039, 0.0114], SliceThickness: 0.12 }],
          FrameAnatomySequence: [
            {
              FrameLaterality: eye,
              AnatomicRegionSequence: [{ CodeValue: 'T-AA610', CodingSchemeDesignator: 'SRT', CodeMeaning: 'Retina' }],
            },
          ],
        },
      ],
      PerFrameFunctionalGroupsSequence: perFrame,
    },
  };
}

/** Builds OCT volumes in memory (about 23 MB each). */
export function createOctVolumes(count: number, tag: string): Buffer[] {
  return Array.from({ length: count }, (_, i) => createSyntheticInstance(octVolumeOptions(i, tag)).bytes);
}

/**
 * Options for one instance of about `targetBytes` of 8-bit 1024 x 1024 frames, to be streamed
 * with streamSyntheticInstance (the Pixel Data length must stay below 2^32 - 1).
 */
export function largeInstanceOptions(targetBytes: number): SyntheticInstanceOptions {
  const frameBytes = 1024 * 1024;
  const frames = Math.max(1, Math.min(4095, Math.round(targetBytes / frameBytes)));
  return {
    sopClassUID: MULTIFRAME_GRAYSCALE_BYTE_SC,
    modality: 'OT',
    patientID: 'BENCH-LARGE',
    patientName: 'Bench^Large',
    studyDescription: 'Benchmark large instance',
    rows: 1024,
    columns: 1024,
    numberOfFrames: frames,
    bitsAllocated: 8,
    samplesPerPixel: 1,
    seed: 7,
    extra: { ImageType: ['DERIVED', 'SECONDARY'], ConversionType: 'WSD', BurnedInAnnotation: 'NO' },
  };
}
