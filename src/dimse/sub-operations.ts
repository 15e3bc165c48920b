/**
 * The C-STORE sub-operations of a retrieve (PS3.4 C.4.2.3 C-MOVE, C.4.3.3 C-GET): each instance
 * goes out as stored when the receiver accepted its transfer syntax for the SOP Class, or
 * transcoded to Explicit VR Little Endian (the WADO-RS transcoder) when it accepted that
 * instead; otherwise that sub-operation fails. Stored bytes are sent as they are: the data set
 * is never parsed and re-encoded on the way out.
 */
import type { Socket } from 'node:net';
import { Dataset, constants, requests, type Scp, type association, type responses } from 'dcmjs-dimse';
import { DataSetWalker } from '../dicom/data-set-walker';
import { collect } from '../dicom/pixel-source';
import { EXPLICIT_LITTLE, TransferSyntaxUid } from '../dicom/transfer-syntax';
import type { StoredInstance } from '../db/wado-index';
import type { TranscodeHook } from '../dicomweb/wado-rs';
import type { BlobStore } from '../storage/blob-store';

/** Where sub-operations read instances from. */
export interface InstanceSource {
  blobs: BlobStore;
  /** Converts to Explicit VR Little Endian; absent: instances go out in their stored syntax only. */
  transcoder?: Pick<TranscodeHook, 'canTranscode' | 'transcodeInstance'>;
}

/** The counts a C-GET/C-MOVE response reports (PS3.4 C.4.2.1.6, C.4.3.1.6). */
export interface SubOperationCounts {
  remaining: number;
  completed: number;
  failed: number;
  warning: number;
  /** SOP Instance UIDs of failed sub-operations: Failed SOP Instance UID List (0008,0058). */
  failedUids: string[];
}

/** The transfer syntaxes a receiver accepted for a SOP Class, from an association's accepted contexts. */
export function acceptedSyntaxes(assoc: association.Association, sopClassUID: string): string[] {
  const out: string[] = [];
  for (const { id } of assoc.getPresentationContexts()) {
    const context = assoc.getPresentationContext(id);
    if (context.getAbstractSyntaxUid() !== sopClassUID || context.getResult() !== constants.PresentationContextResult.Accept) continue;
    const ts = context.getAcceptedTransferSyntaxUid();
    if (ts) out.push(ts);
  }
  return out;
}

/** The syntax an instance goes out in: the stored one when accepted, else one the transcoder makes; undefined: none. */
export function chooseTransferSyntax(stored: string, accepted: readonly string[], canTranscode?: (from: string, to: string) => boolean): string | undefined {
  if (accepted.includes(stored)) return stored;
  return accepted.find((ts) => canTranscode?.(stored, ts) === true);
}

/** An instance's data set bytes (File Meta Information left out) in `transferSyntaxUID`. */
export async function readDataSet(source: InstanceSource, instance: StoredInstance, transferSyntaxUID: string): Promise<Buffer> {
  if (transferSyntaxUID === instance.transferSyntaxUID) {
    const bytes = await source.blobs.readBuffer(instance.blobKey, 0, instance.size - 1);
    return instance.hasFileMeta ? afterFileMeta(bytes) : bytes;
  }
  if (!source.transcoder) throw new Error(`no transcoder for ${instance.transferSyntaxUID} to ${transferSyntaxUID}`);
  const open = () => source.blobs.read(instance.blobKey);
  const part10 = await collect(await source.transcoder.transcodeInstance({ instance, open }, transferSyntaxUID));
  return afterFileMeta(part10);
}

/** The data set of a Part 10 file: what follows its File Meta Information (PS3.10 7.1). */
export function afterFileMeta(part10: Buffer): Buffer {
  const walker = new DataSetWalker(132, EXPLICIT_LITTLE, { maxDepth: 4, maxElements: 1_000 }, { metaOnly: true });
  const outcome = walker.walk(part10, part10.length);
  if (outcome.kind !== 'meta-end') throw new Error('stored instance has no complete File Meta Information');
  return part10.subarray(walker.pos);
}

/**
 * A data set already encoded: dcmjs-dimse sends what `getDenaturalizedDataset` returns, so the
 * stored bytes go on the wire unchanged, in P-DATA fragments of the negotiated size.
 */
class EncodedDataSet extends Dataset {
  constructor(
    private readonly bytes: Buffer,
    transferSyntaxUID: string,
    private readonly uids: { sopClassUID: string; sopInstanceUID: string },
  ) {
    super({}, transferSyntaxUID);
  }

  override getElement(tag: string): string | undefined {
    if (tag === 'SOPClassUID') return this.uids.sopClassUID;
    if (tag === 'SOPInstanceUID') return this.uids.sopInstanceUID;
    return undefined;
  }

  override getDenaturalizedDataset(): Buffer {
    return this.bytes;
  }
}

/** The C-STORE request originated a C-MOVE: the requester's AE title and message (PS3.7 9.1.1.1). */
export interface MoveOriginator {
  aeTitle: string;
  messageId: number;
}

/** An established association instances are sent over: the network driving it, its socket, and what was accepted. */
export interface SendLink {
  network: Scp;
  socket: Socket;
  association: association.Association;
}

/**
 * Sends a request over an established association and resolves with its response, or undefined
 * when the association is closed, or closes, before the response came.
 */
export function exchange<R extends responses.Response>(link: SendLink, request: requests.Request): Promise<R | undefined> {
  if (link.socket.destroyed) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const ended = () => resolve(undefined);
    link.socket.once('close', ended);
    request.on('response', (response: R) => {
      link.socket.off('close', ended);
      resolve(response);
    });
    link.network.sendRequests(request);
  });
}

/**
 * Sends one instance over an established association and resolves with the receiver's C-STORE
 * status, or 0x0110 (processing failure) when the association is or becomes closed first.
 */
export async function sendInstance(link: SendLink, instance: StoredInstance, dataSet: Buffer, transferSyntaxUID: string, originator?: MoveOriginator): Promise<{ status: number; comment?: string }> {
  const request = new requests.CStoreRequest(new EncodedDataSet(dataSet, transferSyntaxUID, instance));
  if (originator) {
    const command = request.getCommandDataset();
    command.setElement('MoveOriginatorApplicationEntityTitle', originator.aeTitle);
    command.setElement('MoveOriginatorMessageID', originator.messageId as unknown as string);
  }
  const response = await exchange<responses.CStoreResponse>(link, request);
  if (!response) return { status: 0x0110, comment: 'the association ended before the instance was acknowledged' };
  return { status: response.getStatus(), comment: response.getErrorComment?.() || undefined };
}

/** How a C-STORE status counts (PS3.4 B.2.3): success, warning (B000, B006, B007), or failure. */
export function countStatus(counts: SubOperationCounts, sopInstanceUID: string, status: number): void {
  counts.remaining--;
  if (status === 0x0000) counts.completed++;
  else if ((status & 0xf000) === 0xb000) counts.warning++;
  else {
    counts.failed++;
    counts.failedUids.push(sopInstanceUID);
  }
}

/**
 * Transfer syntaxes proposed to a C-MOVE destination for one SOP Class, one presentation context
 * each (the receiver then accepts or refuses each on its own): the stored syntaxes, and Explicit
 * VR Little Endian, which the transcoder produces from the ones it decodes.
 */
export function proposedSyntaxes(stored: readonly string[]): string[] {
  return [...new Set([...stored, TransferSyntaxUid.ExplicitVRLittleEndian])];
}
