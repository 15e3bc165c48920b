import { createSyntheticInstance, newUid, type SyntheticInstanceOptions } from '../../src/generate/synthetic-dicom';
import { ctSliceOptions, octVolumeOptions, OCT_GEOMETRY } from './instances';
import { buildMultipartBody, sendAll, type PreparedRequest, type StowTarget } from './stow-client';

/**
 * The few studies of the QIDO/WADO benchmark that have real bytes, stored through STOW-RS:
 * one of each kind the generated index rows are cloned from. Frames and study retrieves are
 * measured on these; the million generated rows point at their blobs.
 */

export type StudyKind = 'ct' | 'mr' | 'oct';

/** MR Image Storage. */
const MR_IMAGE_STORAGE = '1.2.840.10008.5.1.4.1.1.4';
/** Ophthalmic Photography 8 Bit Image Storage (the SLO fundus image a Spectralis stores beside each volume). */
const OPHTHALMIC_PHOTOGRAPHY_8BIT = '1.2.840.10008.5.1.4.1.1.77.1.5.1';

/** Instances per study of each kind: the generated index keeps 10 per study on average (see index-loader.ts). */
export const KIND_SHAPE: Record<StudyKind, { series: number; instances: number }> = {
  ct: { series: 1, instances: 64 },
  mr: { series: 2, instances: 4 },
  oct: { series: 4, instances: 4 },
};

/** One stored study: its UIDs and what it weighs. */
export interface RealStudy {
  kind: StudyKind;
  studyInstanceUID: string;
  series: Array<{ seriesInstanceUID: string; modality: string; instances: Array<{ sopInstanceUID: string; frames: number; bytes: number }> }>;
  bytes: number;
}

interface Built {
  bytes: Buffer;
  study: string;
  series: string;
  sop: string;
  modality: string;
  frames: number;
}

function build(options: SyntheticInstanceOptions): Built {
  const r = createSyntheticInstance(options);
  return {
    bytes: r.bytes,
    study: r.studyInstanceUID,
    series: r.seriesInstanceUID,
    sop: r.sopInstanceUID,
    modality: options.modality ?? 'CT',
    frames: options.numberOfFrames ?? 1,
  };
}

/** A 64-slice CT series (128 x 128 x 16-bit, ~34 kB each, as the STOW benchmark's slices), one study. */
function ctStudy(): Built[] {
  const study = newUid();
  const series = newUid();
  return Array.from({ length: KIND_SHAPE.ct.instances }, (_, n) =>
    build({
      ...ctSliceOptions(n, n + 1, 'template'),
      studyInstanceUID: study,
      seriesInstanceUID: series,
      patientID: 'TEMPLATE-CT',
      patientName: 'Template^CT',
    }),
  );
}

/** Two MR series of two 128 x 128 x 16-bit images. */
function mrStudy(): Built[] {
  const study = newUid();
  const out: Built[] = [];
  for (const [n, description] of [
    [1, 'T1 SE sag'],
    [2, 'T2 TSE ax'],
  ] as const) {
    const series = newUid();
    for (let i = 0; i < 2; i++) {
      out.push(
        build({
          studyInstanceUID: study,
          seriesInstanceUID: series,
          sopClassUID: MR_IMAGE_STORAGE,
          modality: 'MR',
          patientID: 'TEMPLATE-MR',
          patientName: 'Template^MR',
          studyDescription: 'MR brain',
          seriesDescription: description,
          seriesNumber: n,
          instanceNumber: i + 1,
          manufacturer: 'imaging-lake synthetic',
          manufacturerModelName: 'SYNTH-MR',
          rows: 128,
          columns: 128,
          bitsAllocated: 16,
          seed: 500 + n * 10 + i,
          extra: { ImageType: ['ORIGINAL', 'PRIMARY', 'M'], BodyPartExamined: 'BRAIN', MagneticFieldStrength: 3, EchoTime: 12, RepetitionTime: 500 },
        }),
      );
    }
  }
  return out;
}

/**
 * An ophthalmic visit as a Spectralis stores it: for each eye a 61-frame OPT volume
 * (496 x 768, ~23 MB) and an OP SLO image (768 x 768), each in its own series.
 */
function octStudy(): Built[] {
  const study = newUid();
  const out: Built[] = [];
  ['R', 'L'].forEach((eye, e) => {
    const volume = octVolumeOptions(e, 'template');
    out.push(build({ ...volume, studyInstanceUID: study, seriesInstanceUID: newUid(), patientID: 'TEMPLATE-OCT', patientName: 'Template^OCT', seriesNumber: 1 + e, instanceNumber: 1 }));
  });
  ['R', 'L'].forEach((eye, e) => {
    out.push(
      build({
        studyInstanceUID: study,
        seriesInstanceUID: newUid(),
        sopClassUID: OPHTHALMIC_PHOTOGRAPHY_8BIT,
        modality: 'OP',
        patientID: 'TEMPLATE-OCT',
        patientName: 'Template^OCT',
        studyDescription: 'Benchmark OCT macula',
        seriesDescription: `IR SLO ${eye === 'R' ? 'OD' : 'OS'}`,
        seriesNumber: 3 + e,
        instanceNumber: 1,
        manufacturer: 'Heidelberg Engineering',
        manufacturerModelName: 'SPECTRALIS',
        laterality: eye,
        imageLaterality: eye,
        rows: 768,
        columns: 768,
        bitsAllocated: 8,
        seed: 900 + e,
        extra: { ImageType: ['ORIGINAL', 'PRIMARY'], BurnedInAnnotation: 'NO', PresentationLUTShape: 'IDENTITY' },
      }),
    );
  });
  return out;
}

/** Builds a study of the given kind (new UIDs every call) as one STOW request per instance, and describes it. */
export function prepareRealStudy(kind: StudyKind): { requests: PreparedRequest[]; study: RealStudy } {
  const built = { ct: ctStudy, mr: mrStudy, oct: octStudy }[kind]();
  return { requests: built.map((b) => buildMultipartBody([b.bytes])), study: describe(kind, built) };
}

/** Builds and stores one study of each kind; throws when a STOW answer is not a full success. */
export async function storeRealStudies(target: StowTarget, log: (line: string) => void): Promise<Record<StudyKind, RealStudy>> {
  const out = {} as Record<StudyKind, RealStudy>;
  for (const kind of ['ct', 'mr', 'oct'] as const) {
    // One request per instance: the OCT volumes are large, and this is not what is measured.
    const { requests, study } = prepareRealStudy(kind);
    const stats = await sendAll(target, requests, 2, 300_000);
    if (stats.failures > 0) throw new Error(`storing the ${kind} study failed: ${stats.failureSamples.join('; ')}`);
    out[kind] = study;
    log(`stored the real ${kind} study: ${requests.length} instances, ${(study.bytes / 1e6).toFixed(1)} MB`);
  }
  return out;
}

function describe(kind: StudyKind, built: Built[]): RealStudy {
  const study: RealStudy = { kind, studyInstanceUID: built[0]!.study, series: [], bytes: 0 };
  for (const b of built) {
    let series = study.series.find((s) => s.seriesInstanceUID === b.series);
    if (!series) {
      series = { seriesInstanceUID: b.series, modality: b.modality, instances: [] };
      study.series.push(series);
    }
    series.instances.push({ sopInstanceUID: b.sop, frames: b.frames, bytes: b.bytes.length });
    study.bytes += b.bytes.length;
  }
  return study;
}

/** Frames of the template OCT volume: what the single-frame figure asks for. */
export const OCT_FRAME_BYTES = OCT_GEOMETRY.rows * OCT_GEOMETRY.columns;
