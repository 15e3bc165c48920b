/**
 * Storage Commitment Push Model, SCP (PS3.4 Annex J): a modality asks (N-ACTION) whether the
 * instances it sent are safely kept before it deletes its own copies; the answer is an
 * N-EVENT-REPORT listing what is committed and what is not, with a reason. An instance is
 * committed when it is indexed under the SOP Class given and its bytes are in the blob store.
 */
import type { Knex } from 'knex';
import { StatusCode, type DicomJson, type DicomJsonElement } from '../dicom/types';
import { findInstancesByKeys, type StudyRestriction } from '../db/wado-index';
import type { BlobStore } from '../storage/blob-store';

/** Storage Commitment Push Model SOP Class and its well-known SOP Instance (PS3.4 J.3.5). */
export const STORAGE_COMMITMENT_SOP_CLASS = '1.2.840.10008.1.20.1';
export const STORAGE_COMMITMENT_SOP_INSTANCE = '1.2.840.10008.1.20.1.1';

const TRANSACTION_UID = '00081195';
const REFERENCED_SOP_SEQUENCE = '00081199';
const FAILED_SOP_SEQUENCE = '00081198';
const REFERENCED_SOP_CLASS_UID = '00081150';
const REFERENCED_SOP_INSTANCE_UID = '00081155';
const FAILURE_REASON = '00081197';
const RETRIEVE_AE_TITLE = '00080054';

/** One referenced instance. */
export interface SopReference {
  sopClassUID: string;
  sopInstanceUID: string;
}

/** An N-ACTION Request Storage Commitment (Action Type 1). */
export interface CommitmentRequest {
  transactionUID: string;
  references: SopReference[];
}

/** An N-ACTION the SCP cannot take: the N-ACTION status (PS3.7 10.1.4.1.10) and why. */
export class CommitmentRequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'CommitmentRequestError';
  }
}

/** Most references one request may carry. */
const MAX_REFERENCES = 100_000;
const UID = /^[0-9.]{1,64}$/;

/** The Transaction UID and referenced instances of an N-ACTION's data set (PS3.4 J.3.2.1.1). */
export function parseCommitmentRequest(dataSet: DicomJson): CommitmentRequest {
  const transactionUID = text(dataSet[TRANSACTION_UID]);
  if (!transactionUID) throw new CommitmentRequestError(0x0120, 'Transaction UID (0008,1195) is missing');
  if (!UID.test(transactionUID)) throw new CommitmentRequestError(0x0106, 'Transaction UID (0008,1195) is not a UID');
  const items = (dataSet[REFERENCED_SOP_SEQUENCE]?.Value ?? []) as DicomJson[];
  if (items.length === 0) throw new CommitmentRequestError(0x0120, 'Referenced SOP Sequence (0008,1199) is missing or empty');
  if (items.length > MAX_REFERENCES) throw new CommitmentRequestError(0x0106, `more than ${MAX_REFERENCES} references in one request`);
  const references = items.map((item) => {
    const sopClassUID = text(item[REFERENCED_SOP_CLASS_UID]);
    const sopInstanceUID = text(item[REFERENCED_SOP_INSTANCE_UID]);
    if (!sopClassUID || !sopInstanceUID) throw new CommitmentRequestError(0x0120, 'a Referenced SOP Sequence item lacks its SOP Class or Instance UID');
    return { sopClassUID, sopInstanceUID };
  });
  return { transactionUID, references };
}

/** The outcome of a commitment request: what is kept, and what is not with its Failure Reason. */
export interface CommitmentResult {
  transactionUID: string;
  committed: SopReference[];
  failed: Array<SopReference & { reason: number }>;
}

/**
 * Checks each referenced instance: indexed (within the peer's studies) under that SOP Class, and
 * its blob present. An instance outside the peer's studies is reported as not found, like one
 * never stored.
 */
export async function checkCommitment(knex: Knex, blobs: BlobStore, request: CommitmentRequest, restrict?: StudyRestriction): Promise<CommitmentResult> {
  const wellFormed = request.references.filter((r) => UID.test(r.sopInstanceUID));
  const stored = new Map(
    (await findInstancesByKeys(knex, { studyInstanceUIDs: [], seriesInstanceUIDs: [], sopInstanceUIDs: [...new Set(wellFormed.map((r) => r.sopInstanceUID))] }, restrict)).map((i) => [
      i.sopInstanceUID,
      i,
    ]),
  );
  const present = await blobsPresent(blobs, [...new Set([...stored.values()].map((i) => i.blobKey))]);
  const result: CommitmentResult = { transactionUID: request.transactionUID, committed: [], failed: [] };
  for (const ref of request.references) {
    const instance = stored.get(ref.sopInstanceUID);
    // Failure Reasons of PS3.4 J.3.2.1.1.2.
    if (!instance) result.failed.push({ ...ref, reason: StatusCode.NoSuchObjectInstance });
    else if (instance.sopClassUID !== ref.sopClassUID) result.failed.push({ ...ref, reason: StatusCode.ClassInstanceConflict });
    else if (!present.has(instance.blobKey)) result.failed.push({ ...ref, reason: StatusCode.ProcessingFailure });
    else result.committed.push(ref);
  }
  return result;
}

/** Blob stats in flight at once: a request of thousands of instances on S3 is not thousands of HEADs in a row. */
const STAT_CONCURRENCY = 16;

/** The keys among `keys` whose blob is present (a store error counts as absent). */
async function blobsPresent(blobs: BlobStore, keys: readonly string[]): Promise<Set<string>> {
  const present = new Set<string>();
  let next = 0;
  const worker = async () => {
    while (next < keys.length) {
      const key = keys[next++]!;
      if (await blobs.stat(key).then((s) => s !== null, () => false)) present.add(key);
    }
  };
  await Promise.all(Array.from({ length: Math.min(STAT_CONCURRENCY, keys.length) }, worker));
  return present;
}

/**
 * The N-EVENT-REPORT of a result (PS3.4 J.3.3.1): Event Type 1 when every instance is committed,
 * 2 when some are not; Referenced SOP Sequence of the committed ones, Failed SOP Sequence with
 * the reasons, and Retrieve AE Title (where they can be retrieved from).
 */
export function eventReportOf(result: CommitmentResult, aeTitle: string): { eventTypeId: 1 | 2; dataSet: DicomJson } {
  const item = (r: SopReference): DicomJson => ({
    [REFERENCED_SOP_CLASS_UID]: { vr: 'UI', Value: [r.sopClassUID] },
    [REFERENCED_SOP_INSTANCE_UID]: { vr: 'UI', Value: [r.sopInstanceUID] },
  });
  const dataSet: DicomJson = { [TRANSACTION_UID]: { vr: 'UI', Value: [result.transactionUID] } };
  if (result.committed.length > 0) {
    dataSet[RETRIEVE_AE_TITLE] = { vr: 'AE', Value: [aeTitle] };
    dataSet[REFERENCED_SOP_SEQUENCE] = { vr: 'SQ', Value: result.committed.map(item) };
  }
  if (result.failed.length > 0) {
    dataSet[FAILED_SOP_SEQUENCE] = { vr: 'SQ', Value: result.failed.map((f) => ({ ...item(f), [FAILURE_REASON]: { vr: 'US', Value: [f.reason] } })) };
  }
  return { eventTypeId: result.failed.length === 0 ? 1 : 2, dataSet };
}

function text(element: DicomJsonElement | undefined): string | undefined {
  const v = element?.Value?.[0];
  if (v === undefined || v === null) return undefined;
  const s = String(v).replace(/\0/g, '').trim();
  return s === '' ? undefined : s;
}
