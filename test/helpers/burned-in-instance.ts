import { createSyntheticInstance } from '../../src/generate/synthetic-dicom';

/** Ultrasound Image Storage: a SOP class whose instances often carry burned-in text. */
const US_IMAGE_STORAGE = '1.2.840.10008.5.1.4.1.1.6.1';

/**
 * A small synthetic ultrasound image declaring burned-in annotation (BurnedInAnnotation YES), for
 * the patient and study given: the instance a researcher's view withholds until it is cleared.
 */
export function burnedInInstance(of: { studyInstanceUID: string; patientID: string; patientName: string }) {
  return createSyntheticInstance({ ...of, modality: 'US', sopClassUID: US_IMAGE_STORAGE, rows: 8, columns: 8, bitsAllocated: 8, extra: { BurnedInAnnotation: 'YES' } });
}
