import { StatusCode } from '../dicom/types';

/** How one part of a STOW request ended. */
export type PartOutcome =
  | {
      kind: 'stored';
      sopClassUID: string;
      sopInstanceUID: string;
      studyInstanceUID: string;
      seriesInstanceUID: string;
      warning?: { reason: number; message: string };
    }
  | { kind: 'failed'; sopClassUID?: string; sopInstanceUID?: string; reason: number; message: string };

/**
 * Builds the Store Instances response (PS3.18 10.5.3, Table 10.5.3-3): RetrieveURL of the
 * study, ReferencedSOPSequence with a RetrieveURL per stored instance (and WarningReason),
 * FailedSOPSequence with FailureReason per failed part; status 200 when all stored without
 * warnings, 202 when some stored but warnings or failures exist, 409 when none stored.
 */
export function buildStoreResponse(
  outcomes: PartOutcome[],
  dicomwebBaseUrl: string,
  targetStudy?: string,
): { status: number; body: Record<string, unknown>; warnings: string[] } {
  const referenced: Record<string, unknown>[] = [];
  const failed: Record<string, unknown>[] = [];
  const warnings: string[] = [];
  const studies = new Set<string>();
  for (const o of outcomes) {
    if (o.kind === 'stored') {
      studies.add(o.studyInstanceUID);
      const item: Record<string, unknown> = {
        '00081150': { vr: 'UI', Value: [o.sopClassUID] },
        '00081155': { vr: 'UI', Value: [o.sopInstanceUID] },
        '00081190': {
          vr: 'UR',
          Value: [`${dicomwebBaseUrl}/studies/${o.studyInstanceUID}/series/${o.seriesInstanceUID}/instances/${o.sopInstanceUID}`],
        },
      };
      if (o.warning) {
        item['00081196'] = { vr: 'US', Value: [o.warning.reason] };
        warnings.push(o.warning.message);
      }
      referenced.push(item);
    } else {
      const item: Record<string, unknown> = {};
      if (o.sopClassUID) item['00081150'] = { vr: 'UI', Value: [o.sopClassUID] };
      else item['00081150'] = { vr: 'UI' };
      if (o.sopInstanceUID) item['00081155'] = { vr: 'UI', Value: [o.sopInstanceUID] };
      else item['00081155'] = { vr: 'UI' };
      item['00081197'] = { vr: 'US', Value: [o.reason] };
      failed.push(item);
      warnings.push(`${o.message} (FailureReason 0x${o.reason.toString(16).toUpperCase().padStart(4, '0')})`);
    }
  }
  const body: Record<string, unknown> = {};
  const study = targetStudy ?? (studies.size === 1 ? [...studies][0] : undefined);
  if (study && referenced.length > 0) body['00081190'] = { vr: 'UR', Value: [`${dicomwebBaseUrl}/studies/${study}`] };
  if (failed.length > 0) body['00081198'] = { vr: 'SQ', Value: failed };
  if (referenced.length > 0) body['00081199'] = { vr: 'SQ', Value: referenced };
  let status: number;
  if (referenced.length === 0) status = 409;
  else if (failed.length > 0 || referenced.some((r) => '00081196' in r)) status = 202;
  else status = 200;
  return { status, body, warnings };
}

export { StatusCode };
