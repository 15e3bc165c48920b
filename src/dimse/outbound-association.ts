/**
 * Associations this server opens (PS3.8 7.1): to a C-MOVE destination, and to a Storage
 * Commitment requester whose association has ended before its N-EVENT-REPORT could be sent.
 */
import net from 'node:net';
import tls from 'node:tls';
import { Scp, association as dimseAssociation } from 'dcmjs-dimse';
import type { DimsePeer } from '../config';
import type { SendLink } from './sub-operations';

/** A peer with an address to call: its `host` and the `port` of its own listener. */
export type ReachablePeer = DimsePeer & { host: string; port: number };

/** Whether a configured peer can be called. */
export function isReachable(peer: DimsePeer): peer is ReachablePeer {
  return peer.host !== undefined && peer.port !== undefined;
}

/** One presentation context to propose; `scpRole`: we propose to act as its SCP (SCP/SCU Role Selection, PS3.7 D.3.3.4). */
export interface ProposedContext {
  abstractSyntaxUID: string;
  transferSyntaxUIDs: string[];
  scpRole?: boolean;
}

/** An established outbound association. */
export interface OutboundAssociation extends SendLink {
  /** Releases the association (A-RELEASE), or cuts it after a few seconds without an answer. */
  release(): Promise<void>;
}

/**
 * Opens an association from `aeTitle` to `peer` with the given presentation contexts, over TLS
 * when `secure` gives its options (dimse-tls.ts). Rejects with a message when the peer cannot be
 * reached, fails the TLS handshake, refuses, or does not answer in time.
 *
 * dcmjs-dimse exports no bare network class: an Scp on a socket we connected drives the
 * association as its requester (sendAssociationRequest, sendRequests), which is all it is used for.
 */
export function openAssociation(peer: ReachablePeer, aeTitle: string, contexts: readonly ProposedContext[], secure?: tls.ConnectionOptions, timeoutMs = 30_000): Promise<OutboundAssociation> {
  const assoc = new dimseAssociation.Association(aeTitle, peer.aeTitle);
  for (const c of contexts) {
    const pcId = assoc.addPresentationContext(c.abstractSyntaxUID);
    for (const ts of c.transferSyntaxUIDs) assoc.addTransferSyntaxToPresentationContext(pcId, ts);
    if (c.scpRole) {
      const context = assoc.getPresentationContext(pcId);
      context.setUserRole(false);
      context.setProviderRole(true);
    }
  }
  return new Promise((resolve, reject) => {
    const socket = secure ? tls.connect({ ...secure, host: peer.host, port: peer.port }) : net.connect({ host: peer.host, port: peer.port });
    const network = new Scp(socket, { connectTimeout: timeoutMs, associationTimeout: timeoutMs });
    const timer = setTimeout(() => fail(`${peer.aeTitle} did not answer the association request in time`), timeoutMs);
    const fail = (message: string) => {
      clearTimeout(timer);
      socket.destroy();
      reject(new Error(message));
    };
    socket.once('error', (err) => fail(`${peer.aeTitle} at ${peer.host}:${peer.port} cannot be reached: ${err.message}`));
    socket.once(secure ? 'secureConnect' : 'connect', () => network.sendAssociationRequest(assoc));
    network.once('associationRejected', () => fail(`${peer.aeTitle} rejected the association`));
    network.once('associationAccepted', (accepted: dimseAssociation.Association) => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      socket.on('error', () => undefined);
      resolve({
        network,
        socket,
        association: accepted,
        release: () =>
          new Promise<void>((done) => {
            if (socket.destroyed) return done();
            const cut = setTimeout(() => {
              socket.destroy();
              done();
            }, 5_000);
            cut.unref();
            socket.once('close', () => {
              clearTimeout(cut);
              done();
            });
            network.once('associationReleaseResponse', () => socket.end());
            try {
              network.sendAssociationReleaseRequest();
            } catch {
              socket.destroy();
            }
          }),
      });
    });
  });
}
