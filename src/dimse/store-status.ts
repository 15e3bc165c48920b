/**
 * C-STORE response statuses (PS3.4 B.2.3, PS3.7 C) from the outcome of a store. The failure and
 * warning reasons of a STOW-RS response are the same codes (PS3.18 Table 10.5.3-3 refers to
 * PS3.4 B.2.3), so a one-instance store response maps onto the status directly.
 */
import type { AuditEvent } from '../audit/audit-event';
import { StatusCode } from '../dicom/types';
import type { StoreResponse } from '../dicomweb/stow-rs';
import { HttpError } from '../http/errors';

/** A C-STORE status and its Error Comment (0000,0902). */
export interface StoreStatus {
  status: number;
  comment?: string;
}

interface SequenceItem {
  '00081197'?: { Value?: number[] };
  '00081196'?: { Value?: number[] };
}

/** The status of a store response holding one instance: its warning or failure reason, else success. */
export function storeStatusOf(response: Pick<StoreResponse, 'body' | 'warnings'>): StoreStatus {
  const comment = response.warnings[0];
  const failed = (response.body['00081198'] as { Value?: SequenceItem[] } | undefined)?.Value?.[0];
  if (failed) return { status: failed['00081197']?.Value?.[0] ?? StatusCode.ProcessingFailure, comment };
  const stored = (response.body['00081199'] as { Value?: SequenceItem[] } | undefined)?.Value?.[0];
  if (!stored) return { status: StatusCode.ProcessingFailure, comment: 'nothing was stored' };
  const warning = stored['00081196']?.Value?.[0];
  return warning === undefined ? { status: 0x0000 } : { status: warning, comment };
}

/**
 * The status of a store that ended in an error: an unavailable database, blob store or audit
 * trail, or a data set over the size limit, is Refused: Out of Resources (A700H: the sender may
 * try again later); a data set that could not be read, Cannot Understand (C000H); anything
 * else, Processing Failure (0110H).
 */
export function storeStatusOfError(err: unknown): StoreStatus {
  if (err instanceof HttpError) {
    if (err.status === 503 || err.status === 413) return { status: StatusCode.OutOfResources, comment: err.message };
    if (err.status === 400) return { status: StatusCode.CannotUnderstand, comment: err.message };
  }
  return { status: StatusCode.ProcessingFailure, comment: 'the instance could not be stored' };
}

/** AuditEvent outcome of a C-STORE status: success and warnings 0, refusals 4, failures of this server 8. */
export function auditOutcomeOf(status: number): AuditEvent['outcome'] {
  if (status === 0x0000 || (status & 0xf000) === 0xb000) return '0';
  if ((status & 0xff00) === StatusCode.OutOfResources || status === StatusCode.ProcessingFailure) return '8';
  return '4';
}
