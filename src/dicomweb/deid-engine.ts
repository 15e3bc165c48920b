/**
 * The de-identification engine as the DICOMweb researcher views use it: PS3.15 Annex E header
 * edits (src/dicom/deidentify*) on DICOM JSON results and on stored Part 10 instances.
 */
import { deidentifyDicomJson } from '../dicom/deidentify-dataset';
import { deidentifiedTransferSyntax, deidentifyInstance } from '../dicom/deidentify-instance';
import type { DeidEngine } from './deid-view';

/** The engine the DICOMweb router uses unless its services bring one. */
export function createDeidEngine(): DeidEngine {
  return {
    deidentifyJson(dataset, ctx, rewriteBulkDataUri) {
      return deidentifyDicomJson(dataset, ctx, { rewriteBulkDataUri: (uri) => rewriteBulkDataUri(uri) ?? undefined });
    },
    deidentifyInstance,
    transferSyntaxOf: deidentifiedTransferSyntax,
  };
}
