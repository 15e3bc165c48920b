import { createHash } from 'node:crypto';
import { createRandom, type Random } from './random';
import type { Eye, Modality, PlannedPatient, PlannedStudy } from './population';
import { createSyntheticInstance, type SyntheticInstanceOptions } from './synthetic-dicom';

/**
 * The DICOM instances of a planned visit, with the attributes a real device of that modality
 * writes and the ones imaging-lake indexes: laterality (series, image and frame level), the
 * acquisition device type code, manufacturer and model, multi-frame functional groups for OCT
 * volumes, test points for visual fields. Pixel values are noise; geometry follows the preset.
 */
export type PixelPreset = 'small' | 'full';

export const SOP_CLASSES: Record<Modality, string> = {
  CT: '1.2.840.10008.5.1.4.1.1.2',
  MR: '1.2.840.10008.5.1.4.1.1.4',
  OPT: '1.2.840.10008.5.1.4.1.1.77.1.5.4',
  OP: '1.2.840.10008.5.1.4.1.1.77.1.5.1',
  OPV: '1.2.840.10008.5.1.4.1.1.80.1',
};

/** rows x columns x images per series (frames for OPT). */
const GEOMETRY: Record<PixelPreset, Record<Exclude<Modality, 'OPV'>, { rows: number; columns: number; count: number }>> = {
  small: { CT: { rows: 64, columns: 64, count: 8 }, MR: { rows: 64, columns: 64, count: 6 }, OPT: { rows: 64, columns: 96, count: 16 }, OP: { rows: 96, columns: 128, count: 2 } },
  full: { CT: { rows: 512, columns: 512, count: 40 }, MR: { rows: 256, columns: 256, count: 24 }, OPT: { rows: 496, columns: 768, count: 61 }, OP: { rows: 1536, columns: 1536, count: 2 } },
};

const SCT = 'SCT';
const code = (value: string, meaning: string, scheme = SCT) => ({ CodeValue: value, CodingSchemeDesignator: scheme, CodeMeaning: meaning });
const EYE_REGION = { R: code('18944008', 'Right eye'), L: code('8966001', 'Left eye') };
const RETINA = code('5665001', 'Retina');
const OCT_SCANNER = code('392012008', 'Optical Coherence Tomography Scanner');
const FUNDUS_CAMERA = code('409898007', 'Fundus Camera');

/** A decimal string (DS) value: at most 16 characters (PS3.5 6.2). */
const ds = (x: number) => Number(x.toFixed(6));

export interface PlannedInstance {
  seriesNumber: number;
  instanceNumber: number;
  options: SyntheticInstanceOptions;
}

/** The instances of one visit, in series order; build each with `createSyntheticInstance`. */
export function planStudyInstances(patient: PlannedPatient, study: PlannedStudy, preset: PixelPreset): PlannedInstance[] {
  const rnd = createRandom(createHash('sha256').update(study.uid).digest().readUInt32BE(0));
  const common: SyntheticInstanceOptions = {
    studyInstanceUID: study.uid,
    sopClassUID: SOP_CLASSES[study.modality],
    modality: study.modality,
    patientID: patient.mrn,
    issuerOfPatientID: patient.institution.issuer,
    patientName: `${patient.family}^${patient.given}`,
    patientBirthDate: patient.birthDate,
    patientSex: patient.sex,
    studyDate: study.date,
    studyTime: study.time,
    accessionNumber: study.accession,
    studyDescription: study.description,
    manufacturer: study.device.manufacturer,
    manufacturerModelName: study.device.model,
  };
  const deviceAttributes = {
    InstitutionName: patient.institution.name,
    ReferringPhysicianName: '',
    DeviceSerialNumber: study.device.serial,
    SoftwareVersions: study.device.software,
    SeriesDate: study.date,
    ...(study.modality === 'OPV' ? {} : { ContentDate: study.date, ContentTime: study.time }),
  };
  const series = seriesOf(study, rnd);
  const out: PlannedInstance[] = [];
  series.forEach((s, i) => {
    const seriesInstanceUID = rnd.uid();
    const frameOfReferenceUID = rnd.uid();
    const images = s.images || imagesPerSeries(study.modality, preset);
    for (let n = 1; n <= images; n++) {
      out.push({
        seriesNumber: i + 1,
        instanceNumber: n,
        options: {
          ...common,
          ...geometryOf(study.modality, preset),
          seriesInstanceUID,
          sopInstanceUID: rnd.uid(),
          seriesNumber: i + 1,
          instanceNumber: n,
          seriesDescription: s.description,
          seed: rnd.int(1, 2 ** 31),
          // Ophthalmic objects carry laterality at image (or measurement) level; series-level
          // Laterality is only for objects without it (PS3.3 C.7.3.1).
          ...(s.eye ? { imageLaterality: s.eye } : {}),
          extra: { ...deviceAttributes, ...modalityAttributes(study, s, n, preset, rnd, frameOfReferenceUID) },
          ...(study.modality === 'OPV' ? { pixelData: false } : {}),
        },
      });
    }
  });
  return out;
}

/** Builds the Part 10 bytes of a planned instance. */
export function buildInstance(planned: PlannedInstance): Buffer {
  return createSyntheticInstance(planned.options).bytes;
}

interface SeriesPlan {
  description: string;
  images: number;
  eye?: Eye;
  /** MR weighting. */
  weighting?: 'T1' | 'T2';
}

function seriesOf(study: PlannedStudy, rnd: Random): SeriesPlan[] {
  switch (study.modality) {
    case 'CT':
      return [{ description: 'Axial 2 mm soft tissue', images: 0 }];
    case 'MR':
      return rnd.next() < 0.5
        ? [{ description: 'Ax T1 SE', images: 0, weighting: 'T1' }]
        : [
            { description: 'Ax T1 SE', images: 0, weighting: 'T1' },
            { description: 'Cor T2 FS', images: 0, weighting: 'T2' },
          ];
    case 'OPT':
      return study.eyes.map((eye) => ({ description: `${study.description} ${eye === 'R' ? 'OD' : 'OS'}`, images: 1, eye }));
    case 'OP':
      return study.eyes.map((eye) => ({ description: `Fundus ${eye === 'R' ? 'OD' : 'OS'}`, images: 0, eye }));
    case 'OPV':
      return study.eyes.map((eye) => ({ description: `${study.description} ${eye === 'R' ? 'OD' : 'OS'}`, images: 1, eye }));
  }
}

function geometryOf(modality: Modality, preset: PixelPreset): Partial<SyntheticInstanceOptions> {
  if (modality === 'OPV') return {};
  const g = GEOMETRY[preset][modality];
  switch (modality) {
    case 'CT':
    case 'MR':
      return { rows: g.rows, columns: g.columns, bitsAllocated: 16 };
    case 'OPT':
      return { rows: g.rows, columns: g.columns, bitsAllocated: 8, numberOfFrames: g.count };
    case 'OP':
      return { rows: g.rows, columns: g.columns, bitsAllocated: 8, samplesPerPixel: 3 };
  }
}

/** Images per series for the preset (series with `images: 0` take it from the geometry). */
export function imagesPerSeries(modality: Modality, preset: PixelPreset): number {
  if (modality === 'OPT' || modality === 'OPV') return 1;
  return GEOMETRY[preset][modality].count;
}

function modalityAttributes(study: PlannedStudy, s: SeriesPlan, n: number, preset: PixelPreset, rnd: Random, frameOfReferenceUID: string): Record<string, unknown> {
  const acquired = `${study.date}${study.time}`;
  const crossSectional = { FrameOfReferenceUID: frameOfReferenceUID, PositionReferenceIndicator: '', PatientPosition: 'HFS', AcquisitionNumber: 1 };
  // Ophthalmic acquisition parameters (type 2 in PS3.3 C.8.17) with plausible values.
  const ophthalmicAcquisition = { EmmetropicMagnification: 1, IntraOcularPressure: 15, PupilDilated: 'NO', RefractiveStateSequence: [], LightPathFilterTypeStackCodeSequence: [], DetectorType: 'CCD' };
  switch (study.modality) {
    case 'CT': {
      const g = GEOMETRY[preset].CT;
      return {
        ...crossSectional,
        ImageType: ['ORIGINAL', 'PRIMARY', 'AXIAL'],
        BodyPartExamined: 'HEAD',
        KVP: 120,
        SliceThickness: 2,
        PixelSpacing: [ds(200 / g.columns), ds(200 / g.rows)],
        ImageOrientationPatient: [1, 0, 0, 0, 1, 0],
        ImagePositionPatient: [-100, -100, -40 + 2 * n],
        SliceLocation: -40 + 2 * n,
        RescaleIntercept: -1024,
        RescaleSlope: 1,
        WindowCenter: 40,
        WindowWidth: 400,
      };
    }
    case 'MR': {
      const g = GEOMETRY[preset].MR;
      const t1 = s.weighting === 'T1';
      return {
        ...crossSectional,
        ImageType: ['ORIGINAL', 'PRIMARY', 'OTHER'],
        BodyPartExamined: 'HEAD',
        ScanningSequence: 'SE',
        SequenceVariant: 'SK',
        ScanOptions: t1 ? '' : 'FS',
        MRAcquisitionType: '2D',
        RepetitionTime: t1 ? 550 : 4000,
        EchoTime: t1 ? 12 : 85,
        EchoTrainLength: t1 ? 1 : 16,
        MagneticFieldStrength: 3,
        SliceThickness: 3,
        PixelSpacing: [ds(180 / g.columns), ds(180 / g.rows)],
        ImageOrientationPatient: [1, 0, 0, 0, 1, 0],
        ImagePositionPatient: [-90, -90, -30 + 3 * n],
        SliceLocation: -30 + 3 * n,
      };
    }
    case 'OPT': {
      const g = GEOMETRY[preset].OPT;
      const eye = s.eye ?? 'R';
      return {
        ...ophthalmicAcquisition,
        ImageType: ['ORIGINAL', 'PRIMARY'],
        AcquisitionDeviceTypeCodeSequence: [OCT_SCANNER],
        AnatomicRegionSequence: [RETINA],
        AcquisitionDateTime: acquired,
        AcquisitionDuration: 1.6,
        AcquisitionNumber: 1,
        AcquisitionContextSequence: [],
        LossyImageCompression: '00',
        PresentationLUTShape: 'IDENTITY',
        BurnedInAnnotation: 'NO',
        AxialLengthOfTheEye: 23.5,
        HorizontalFieldOfView: 30,
        DimensionOrganizationSequence: [{ DimensionOrganizationUID: frameOfReferenceUID }],
        DimensionIndexSequence: [
          { DimensionOrganizationUID: frameOfReferenceUID, DimensionIndexPointer: 0x00209057, FunctionalGroupPointer: 0x00209111, DimensionDescriptionLabel: 'B-scan' },
        ],
        SharedFunctionalGroupsSequence: [
          {
            FrameAnatomySequence: [{ FrameLaterality: eye, AnatomicRegionSequence: [EYE_REGION[eye]] }],
            PixelMeasuresSequence: [{ PixelSpacing: [0.0039, ds(6 / g.columns)], SliceThickness: ds(6 / g.count) }],
            PlaneOrientationSequence: [{ ImageOrientationPatient: [1, 0, 0, 0, 0, -1] }],
          },
        ],
        PerFrameFunctionalGroupsSequence: Array.from({ length: g.count }, (_, i) => ({
          FrameContentSequence: [
            { FrameAcquisitionDateTime: acquired, FrameReferenceDateTime: acquired, FrameAcquisitionDuration: 25, StackID: '1', InStackPositionNumber: i + 1, DimensionIndexValues: [i + 1] },
          ],
          PlanePositionSequence: [{ ImagePositionPatient: [-3, ds(-3 + (6 * i) / g.count), 0] }],
        })),
      };
    }
    case 'OP':
      return {
        ...ophthalmicAcquisition,
        ImageType: ['ORIGINAL', 'PRIMARY'],
        NumberOfFrames: '1',
        FrameIncrementPointer: 0x00181063,
        FrameTime: 0,
        PatientOrientation: '',
        AcquisitionDateTime: acquired,
        AcquisitionTimeSynchronized: 'N',
        SynchronizationFrameOfReferenceUID: '1.2.840.10008.15.1.1',
        SynchronizationTrigger: 'NO TRIGGER',
        LossyImageCompression: '00',
        AcquisitionDeviceTypeCodeSequence: [FUNDUS_CAMERA],
        AnatomicRegionSequence: [RETINA],
        IlluminationTypeCodeSequence: [],
        ImagePathFilterTypeStackCodeSequence: [],
        LensesCodeSequence: [],
        BurnedInAnnotation: 'NO',
        PatientEyeMovementCommanded: 'NO',
        HorizontalFieldOfView: 45,
      };
    case 'OPV':
      return visualField(s.eye ?? 'R', rnd);
  }
}

/** A 24-2 pattern: 54 points 6 degrees apart, 3 degrees off both meridians. */
function visualField(eye: Eye, rnd: Random): Record<string, unknown> {
  const points: Array<Record<string, unknown>> = [];
  const rowWidths = [4, 6, 8, 9, 9, 8, 6, 4];
  rowWidths.forEach((width, r) => {
    const y = 21 - 6 * r;
    for (let c = 0; c < width; c++) {
      // Rows of 9 points reach the nasal step on the side away from the blind spot.
      const start = width === 9 ? (eye === 'R' ? -27 : -21) : -3 * (width - 1);
      const x = start + 6 * c;
      const sensitivity = Math.max(0, Math.round(32 - Math.abs(y) / 6 - rnd.next() * 8));
      points.push({
        VisualFieldTestPointXCoordinate: x,
        VisualFieldTestPointYCoordinate: y,
        StimulusResults: sensitivity > 0 ? 'SEEN' : 'NOT SEEN',
        SensitivityValue: sensitivity,
      });
    }
  });
  const mean = points.reduce((sum, p) => sum + Number(p.SensitivityValue), 0) / points.length;
  const white = [code('371251000', 'White color')];
  return {
    MeasurementLaterality: eye,
    BackgroundIlluminationColorCodeSequence: white,
    StimulusColorCodeSequence: white,
    BackgroundLuminance: 10,
    MaximumStimulusLuminance: 3183,
    StimulusArea: 0.15,
    StimulusPresentationTime: 200,
    BlindSpotLocalized: 'YES',
    BlindSpotXCoordinate: eye === 'R' ? 15 : -15,
    BlindSpotYCoordinate: -1.5,
    FovealSensitivityMeasured: 'NO',
    FovealPointNormativeDataFlag: 'NO',
    MinimumSensitivityValue: 0,
    PresentedVisualStimuliDataFlag: 'NO',
    TestPointNormalsDataFlag: 'NO',
    VisualFieldTestDuration: 320,
    VisualFieldTestNormalsFlag: 'NO',
    CorrectedLocalizedDeviationFromNormalCalculated: 'NO',
    CorrectedLocalizedDeviationFromNormalProbabilityCalculated: 'NO',
    ShortTermFluctuationCalculated: 'NO',
    ShortTermFluctuationProbabilityCalculated: 'NO',
    FixationSequence: [{ FixationMonitoringCodeSequence: [code('111860', 'Blind spot monitoring', 'DCM')], FixationCheckedQuantity: 16, PatientNotProperlyFixatedQuantity: 1, ExcessiveFixationLossesDataFlag: 'NO' }],
    VisualFieldCatchTrialSequence: [
      {
        CatchTrialsDataFlag: 'NO',
        FalseNegativesEstimateFlag: 'NO',
        FalsePositivesEstimateFlag: 'NO',
        ExcessiveFalseNegativesDataFlag: 'NO',
        ExcessiveFalsePositivesDataFlag: 'NO',
      },
    ],
    [eye === 'R' ? 'OphthalmicPatientClinicalInformationRightEyeSequence' : 'OphthalmicPatientClinicalInformationLeftEyeSequence']: [{ RefractiveParametersUsedOnPatientSequence: [], PupilDilated: 'NO', PupilSize: 4 }],
    VisualFieldHorizontalExtent: 54,
    VisualFieldVerticalExtent: 42,
    VisualFieldShape: 'RECTANGLE',
    ScreeningBaselineMeasured: 'NO',
    VisualFieldTestPointSequence: points,
    VisualFieldMeanSensitivity: Math.round(mean * 10) / 10,
  };
}
