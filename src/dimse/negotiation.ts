/**
 * Association negotiation of the DIMSE listener (PS3.8 7.1.1, 9.3.2): who may associate, and
 * which presentation contexts are accepted. Pure code: the listener applies the verdicts.
 */
import { isIP } from 'node:net';
import type { DimsePeer, DimseService } from '../config';
import { QUERY_RETRIEVE_SOP_CLASSES } from './query';
import { STORAGE_COMMITMENT_SOP_CLASS } from './storage-commitment';
import { TransferSyntaxUid } from '../dicom/transfer-syntax';

/** Verification SOP Class (PS3.4 A.4): C-ECHO. */
export const VERIFICATION_SOP_CLASS = '1.2.840.10008.1.1';

/**
 * Storage SOP Classes outside the 1.2.840.10008.5.1.4.1.1 arc (PS3.4 Annex B.5, PS3.6 Annex A):
 * RT delivery instructions, hanging protocols, color palettes, implant templates, protocols.
 */
const OTHER_STORAGE_SOP_CLASSES = new Set([
  '1.2.840.10008.5.1.4.34.7', // RT Beams Delivery Instruction
  '1.2.840.10008.5.1.4.34.10', // RT Brachy Application Setup Delivery Instruction
  '1.2.840.10008.5.1.4.38.1', // Hanging Protocol
  '1.2.840.10008.5.1.4.39.1', // Color Palette
  '1.2.840.10008.5.1.4.43.1', // Generic Implant Template
  '1.2.840.10008.5.1.4.44.1', // Implant Assembly Template
  '1.2.840.10008.5.1.4.45.1', // Implant Template Group
]);

/** Whether a C-STORE of this SOP Class is accepted: the standard storage classes (PS3.4 B.5). */
export function isStorageSopClass(uid: string): boolean {
  return (uid.startsWith('1.2.840.10008.5.1.4.1.1.') && /^[\d.]+$/.test(uid)) || OTHER_STORAGE_SOP_CLASSES.has(uid);
}

/**
 * Transfer syntaxes received as sent and stored unchanged (the same the STOW-RS path stores):
 * the uncompressed ones, deflate, RLE, deflated image frames, and the encapsulated 1.2.840.10008.1.2.4.x family (JPEG,
 * JPEG-LS, JPEG 2000, HTJ2K, JPEG XL, MPEG and HEVC video).
 */
export function isStorableTransferSyntax(uid: string): boolean {
  return (
    uid === TransferSyntaxUid.ImplicitVRLittleEndian ||
    uid === TransferSyntaxUid.ExplicitVRLittleEndian ||
    uid === TransferSyntaxUid.DeflatedExplicitVRLittleEndian ||
    uid === TransferSyntaxUid.ExplicitVRBigEndian ||
    uid === '1.2.840.10008.1.2.5' ||
    uid === '1.2.840.10008.1.2.8.1' ||
    /^1\.2\.840\.10008\.1\.2\.4\.\d+$/.test(uid)
  );
}


/** The answer to one proposed presentation context (PS3.8 9.3.3.2 result/reason). */
export type ContextVerdict =
  | { result: 'accept'; transferSyntaxUID: string }
  | { result: 'abstract-syntax-not-supported' }
  | { result: 'transfer-syntaxes-not-supported' };

/** Transfer syntaxes a query/retrieve identifier is exchanged in (no pixel data: the uncompressed ones). */
function isIdentifierTransferSyntax(uid: string): boolean {
  return uid === TransferSyntaxUid.ImplicitVRLittleEndian || uid === TransferSyntaxUid.ExplicitVRLittleEndian || uid === TransferSyntaxUid.ExplicitVRBigEndian;
}

/**
 * Accepts Verification always; Storage Commitment Push Model for peers that store; the Query/Retrieve SOP Classes (Patient and Study Root FIND, GET,
 * MOVE) the peer is allowed; and the storage SOP Classes when the peer may store or C-GET (a C-GET
 * requester proposes the storage classes it receives, in the SCP role, PS3.4 C.4.3.3). For
 * storage, the first transfer syntax the requester proposed that is stored unchanged wins (its
 * own order of preference): nothing is transcoded on the way in.
 */
export function judgeContext(abstractSyntaxUID: string, proposed: readonly string[], services: readonly DimseService[] = ['store']): ContextVerdict {
  if (abstractSyntaxUID === VERIFICATION_SOP_CLASS) {
    // Verification carries no data set: the default syntax is enough (PS3.7 A.4).
    const ts = proposed.find((t) => t === TransferSyntaxUid.ImplicitVRLittleEndian) ?? proposed.find(isStorableTransferSyntax);
    return ts ? { result: 'accept', transferSyntaxUID: ts } : { result: 'transfer-syntaxes-not-supported' };
  }
  if (abstractSyntaxUID === STORAGE_COMMITMENT_SOP_CLASS) {
    // Storage Commitment Push Model (PS3.4 J): for the peers that store.
    if (!services.includes('store')) return { result: 'abstract-syntax-not-supported' };
    const ts = proposed.find(isIdentifierTransferSyntax);
    return ts ? { result: 'accept', transferSyntaxUID: ts } : { result: 'transfer-syntaxes-not-supported' };
  }
  const queryRetrieve = QUERY_RETRIEVE_SOP_CLASSES.get(abstractSyntaxUID);
  if (queryRetrieve) {
    if (!services.includes(queryRetrieve.operation)) return { result: 'abstract-syntax-not-supported' };
    const ts = proposed.find(isIdentifierTransferSyntax);
    return ts ? { result: 'accept', transferSyntaxUID: ts } : { result: 'transfer-syntaxes-not-supported' };
  }
  if (!isStorageSopClass(abstractSyntaxUID) || !(services.includes('store') || services.includes('get'))) return { result: 'abstract-syntax-not-supported' };
  const ts = proposed.find(isStorableTransferSyntax);
  return ts ? { result: 'accept', transferSyntaxUID: ts } : { result: 'transfer-syntaxes-not-supported' };
}

/** Whether an association may be accepted, and as which configured peer. */
export type AssociationVerdict =
  | { accept: true; peer: DimsePeer }
  | { accept: false; reason: 'called-ae-not-recognized' | 'calling-ae-not-recognized'; message: string };

/**
 * A request is accepted when it calls this server's AE title and comes from a configured peer:
 * its AE title, and its address when the peer names one. AE titles compare without their
 * leading and trailing spaces (PS3.5 6.2, AE), case-sensitively.
 */
export function judgeAssociation(config: { aeTitle: string; peers: readonly DimsePeer[] }, calledAETitle: string, callingAETitle: string, address: string | undefined): AssociationVerdict {
  const called = calledAETitle.trim();
  const calling = callingAETitle.trim();
  if (called !== config.aeTitle) {
    return { accept: false, reason: 'called-ae-not-recognized', message: `called AE title "${called}" is not this server's (${config.aeTitle})` };
  }
  const from = normalizeAddress(address);
  const peer = config.peers.find((p) => p.aeTitle === calling && (p.host === undefined || normalizeAddress(p.host) === from));
  if (!peer) {
    const known = config.peers.some((p) => p.aeTitle === calling);
    return {
      accept: false,
      reason: 'calling-ae-not-recognized',
      message: known ? `calling AE title "${calling}" is not allowed from ${from ?? 'an unknown address'}` : `calling AE title "${calling}" is not a configured peer`,
    };
  }
  return { accept: true, peer };
}

/** An IPv4 address seen through an IPv6 socket (`::ffff:10.0.0.5`) compares as IPv4. */
function normalizeAddress(address: string | undefined): string | undefined {
  if (!address) return undefined;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1];
  return isIP(address) === 6 ? address.toLowerCase() : address;
}
