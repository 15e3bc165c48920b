/**
 * The DIMSE C-STORE SCP (PS3.4 Annex B, PS3.7 9.1.1, PS3.8): modalities, OCT devices and
 * gateways that speak DICOM's network protocol push instances here, and they take the same
 * path as a STOW-RS (src/dicomweb/stow-rs.ts): streamed to a staged blob while the header is
 * scanned, made durable, then indexed with the request's AuditEvent in one transaction. A
 * success status is sent only once that transaction committed.
 *
 * The upper layer (PDUs, association negotiation, DIMSE messages) is dcmjs-dimse; this module
 * decides who may associate (negotiation.ts), streams each received data set into the store
 * with a File Meta Information header built from the command, and maps the store's outcome onto
 * a C-STORE status. Verification (C-ECHO) is answered; other services are not offered.
 */
import net from 'node:net';
import { PassThrough, Writable } from 'node:stream';
import { Dataset, Implementation, Scp, constants, log as dimseLog, responses, type association, type requests } from 'dcmjs-dimse';
import type { DimseConfig, DimsePeer } from '../config';
import { buildAuditEvent, type AuditInput, type AuditSource } from '../audit/audit-event';
import { auditStatementOf } from '../audit/audit-response';
import { auditWriterFor } from '../audit/audit-writer';
import { IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, buildFileMeta } from '../dicomweb/wado-rs';
import { storeInstances, type StoreServices } from '../dicomweb/stow-rs';
import type { Logger } from '../logger';
import { judgeAssociation, judgeContext } from './negotiation';
import { auditOutcomeOf, storeStatusOf, storeStatusOfError, type StoreStatus } from './store-status';

const { PresentationContextResult, RejectResult, RejectSource, RejectReason } = constants;

// dcmjs-dimse logs every PDU to the console unless told otherwise; this module logs what matters.
dimseLog.setLevel('silent');
Implementation.setImplementationClassUid(IMPLEMENTATION_CLASS_UID);
Implementation.setImplementationVersion(IMPLEMENTATION_VERSION_NAME);

/** What the listener needs from the rest of the server. */
export interface DimseListenerDeps {
  config: DimseConfig;
  /** The services STOW-RS stores with (the same blob store, index and index-change hook). */
  store: StoreServices;
  /** The audit trail's source (the server's identity as the destination of a transfer). */
  auditSource: AuditSource;
  /** Base of the DICOMweb RetrieveURLs of what is stored (the index queue is per base). */
  dicomwebBaseUrl: string;
  logger: Logger;
}

/** A running listener. */
export interface DimseListener {
  /** The port bound (useful with port 0). */
  readonly port: number;
  /** Stops accepting associations and ends the open ones; resolves when their stores have answered. */
  close(): Promise<void>;
}

/** Idle time after which an association is aborted (no PDU received; dcmjs-dimse checks each second). */
const PDU_TIMEOUT_MS = 5 * 60_000;
/** Time from connection to A-ASSOCIATE-RQ. */
const ASSOCIATION_TIMEOUT_MS = 30_000;

/** Starts the DIMSE listener on `config.host`:`config.port`. */
export async function startDimseListener(deps: DimseListenerDeps): Promise<DimseListener> {
  const open = new Set<StoreScp>();
  const server = net.createServer((socket) => {
    socket.on('error', (err) => deps.logger.debug({ err }, 'DIMSE connection error'));
    const scp = new StoreScp(socket, deps);
    open.add(scp);
    socket.once('close', () => open.delete(scp));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(deps.config.port, deps.config.host, () => resolve());
  });
  server.on('error', (err) => deps.logger.error({ err }, 'DIMSE listener error'));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : deps.config.port;
  deps.logger.info({ host: deps.config.host, port, aeTitle: deps.config.aeTitle, peers: deps.config.peers.length }, 'DIMSE C-STORE SCP listening');
  return {
    port,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      await Promise.all([...open].map((scp) => scp.finish()));
      await closed;
    },
  };
}

/** The receipt of one C-STORE data set: its bytes flow into `body`, its outcome is `status`. */
interface Receipt {
  body: PassThrough;
  status: Promise<StoreStatus>;
}

/** One association. */
class StoreScp extends Scp {
  private peer: DimsePeer | undefined;
  private callingAETitle = '';
  /** C-STOREs whose data set is being received or stored, by their request. */
  private readonly receipts = new Map<requests.CStoreRequest, Receipt>();

  constructor(
    private readonly socketOf: net.Socket,
    private readonly deps: DimseListenerDeps,
  ) {
    super(socketOf, { associationTimeout: ASSOCIATION_TIMEOUT_MS, pduTimeout: PDU_TIMEOUT_MS });
    this.on('networkError', (err: unknown) => {
      deps.logger.warn({ err, callingAETitle: this.callingAETitle || undefined }, 'DIMSE association failed');
      this.dropReceipts('the association failed');
      this.socketOf.end();
    });
    this.on('close', () => this.dropReceipts('the association closed'));
  }

  override associationRequested(assoc: association.Association): void {
    this.callingAETitle = assoc.getCallingAeTitle().trim();
    const address = this.socketOf.remoteAddress;
    const verdict = judgeAssociation(this.deps.config, assoc.getCalledAeTitle(), assoc.getCallingAeTitle(), address);
    if (!verdict.accept) {
      this.deps.logger.warn({ callingAETitle: this.callingAETitle, address, reason: verdict.message }, 'DIMSE association rejected');
      const reason = verdict.reason === 'called-ae-not-recognized' ? RejectReason.CalledAeNotRecognized : RejectReason.CallingAeNotRecognized;
      // A refused association is a failed sign-in: recorded as one (IHE BALP / DICOM 110114).
      void this.audit({ protocol: 'auth', action: 'login', outcome: '4', outcomeDescription: `DIMSE association rejected: ${verdict.message}`, details: this.details(assoc) })
        .catch((err: unknown) => this.deps.logger.error({ err }, 'audit of a rejected DIMSE association failed'))
        .finally(() => {
          try {
            this.sendAssociationReject(RejectResult.Permanent, RejectSource.ServiceUser, reason);
          } catch (err) {
            this.deps.logger.debug({ err }, 'DIMSE association reject not sent (the peer went away)');
          }
        });
      return;
    }
    this.peer = verdict.peer;
    for (const { id } of assoc.getPresentationContexts()) {
      const context = assoc.getPresentationContext(id);
      const judged = judgeContext(context.getAbstractSyntaxUid(), context.getTransferSyntaxUids());
      if (judged.result === 'accept') context.setResult(PresentationContextResult.Accept, judged.transferSyntaxUID);
      else if (judged.result === 'abstract-syntax-not-supported') context.setResult(PresentationContextResult.RejectAbstractSyntaxNotSupported);
      else context.setResult(PresentationContextResult.RejectTransferSyntaxesNotSupported);
    }
    this.deps.logger.info({ callingAETitle: this.callingAETitle, address }, 'DIMSE association accepted');
    this.sendAssociationAccept();
  }

  override associationReleaseRequested(): void {
    this.sendAssociationReleaseResponse();
  }

  override cEchoRequest(request: requests.CEchoRequest, respond: (response: responses.CEchoResponse) => void): void {
    const response = responses.CEchoResponse.fromRequest(request);
    response.setStatus(0x0000);
    respond(response);
  }

  /**
   * The first P-DATA of a C-STORE's data set: the store starts at once on a stream that gets
   * the File Meta Information (from the command and the accepted transfer syntax) and then the
   * data set as it arrives. When the store falls behind, the socket is paused (TCP backpressure).
   */
  override createStoreWritableStream(context: association.PresentationContext, request: requests.CStoreRequest): Writable {
    const expected = { sopClassUID: request.getAffectedSopClassUid(), sopInstanceUID: request.getAffectedSopInstanceUid() };
    const body = new PassThrough();
    body.write(buildFileMeta({ ...expected, transferSyntaxUID: context.getAcceptedTransferSyntaxUid() ?? '' }, this.callingAETitle));
    let settled = false;
    // Data without an accepted association (a protocol violation) is never stored.
    const storing = this.peer ? this.store(body, expected, this.peer) : Promise.resolve<StoreStatus>({ status: 0x0124, comment: 'no association was accepted' });
    const status = storing.finally(() => {
      // The store has read all it will: later bytes of this data set are dropped.
      settled = true;
      body.resume();
      this.socketOf.resume();
    });
    status.catch(() => undefined); // answered in cStoreRequest, or nobody is left to answer
    this.receipts.set(request, { body, status });
    const socket = this.socketOf;
    let paused = false;
    return new Writable({
      write(chunk: Buffer, _encoding, done) {
        if (!settled && !body.write(chunk) && !paused) {
          paused = true;
          socket.pause();
          body.once('drain', () => {
            paused = false;
            socket.resume();
          });
        }
        done();
      },
      final(done) {
        body.end();
        done();
      },
    });
  }

  /** The data set was received whole: the request goes on with an empty Dataset (the store has the bytes). */
  override createDatasetFromStoreWritableStream(_writable: Writable, context: association.PresentationContext, callback: (dataset: Dataset) => void): void {
    callback(new Dataset({}, context.getAcceptedTransferSyntaxUid()));
  }

  override cStoreRequest(request: requests.CStoreRequest, respond: (response: responses.CStoreResponse) => void): void {
    const receipt = this.receipts.get(request);
    const answer = receipt ? receipt.status : Promise.resolve<StoreStatus>({ status: 0xc000, comment: 'the C-STORE carried no data set' });
    const failed = (err: unknown): StoreStatus => {
      this.deps.logger.error({ err }, 'DIMSE C-STORE failed');
      return { status: 0x0110, comment: 'the instance could not be stored' };
    };
    void answer.catch(failed).then((outcome) => {
      this.receipts.delete(request);
      const response = responses.CStoreResponse.fromRequest(request);
      response.setStatus(outcome.status);
      if (outcome.comment) response.setErrorComment(outcome.comment.slice(0, 64));
      try {
        respond(response);
      } catch (err) {
        // The association ended while the store ran: the outcome stands, nobody is left to tell.
        this.deps.logger.debug({ err }, 'DIMSE C-STORE response not sent');
      }
    });
  }

  override cCancelRequest(): void {}

  /** A-ABORT from the peer (PS3.8 7.3): what is still arriving is dropped, and the connection closed. */
  override abort(): void {
    this.dropReceipts('the association was aborted');
    this.socketOf.end();
  }

  /** Waits for the stores under way, then ends the connection. */
  async finish(): Promise<void> {
    await Promise.allSettled([...this.receipts.values()].map((r) => r.status));
    this.socketOf.end();
    // A peer that keeps its half of the connection open does not hold the shutdown up.
    setTimeout(() => this.socketOf.destroy(), 5_000).unref();
  }

  /** Data sets still arriving end in an error: nothing of them is kept. */
  private dropReceipts(why: string): void {
    for (const r of this.receipts.values()) if (!r.body.writableEnded) r.body.destroy(new Error(why));
  }

  /** Stores one received instance like a single-part STOW-RS, its AuditEvent in the index transaction. */
  private async store(body: PassThrough, expected: { sopClassUID: string; sopInstanceUID: string }, peer: DimsePeer): Promise<StoreStatus> {
    const details = { ...this.details(), sopInstanceUID: expected.sopInstanceUID };
    let committed: Promise<boolean> | undefined;
    let status: StoreStatus;
    try {
      const response = await storeInstances(this.deps.store, {
        contentType: 'application/dicom',
        contentLength: undefined,
        body,
        dicomwebBaseUrl: this.deps.dicomwebBaseUrl,
        projects: peer.projects,
        // A peer tied to projects adds only to their studies, as a data manager's STOW-RS does.
        studyScope: peer.projects.length > 0 ? 'projects' : 'all',
        expected,
        auditStatement: (studyUids) =>
          auditStatementOf(buildAuditEvent(this.auditInput({ protocol: 'dimse', action: 'create', studyUids, status: 200, details }), this.deps.auditSource), (c) => (committed = c)),
      });
      status = storeStatusOf(response);
    } catch (err) {
      status = storeStatusOfError(err);
      if (status.status === 0x0110) this.deps.logger.error({ err }, 'DIMSE C-STORE failed');
    }
    if (committed && (await committed)) return status;
    // Nothing was indexed (a refusal, a failure): the attempt is recorded on its own.
    try {
      await this.audit({ protocol: 'dimse', action: 'create', outcome: auditOutcomeOf(status.status), outcomeDescription: status.comment, details });
    } catch (err) {
      this.deps.logger.error({ err }, 'audit of a failed DIMSE C-STORE failed');
      return { status: 0xa700, comment: 'the audit trail is unavailable' };
    }
    return status;
  }

  private auditInput(input: Omit<AuditInput, 'agent'>): AuditInput {
    const peer = this.peer;
    return {
      ...input,
      // The peer is an application, identified by its AE title (BALP: the client as requestor).
      agent: { subject: this.callingAETitle, clientId: this.callingAETitle, issuer: 'urn:dicom:ae-title', address: this.socketOf.remoteAddress },
      projects: peer && peer.projects.length > 0 ? peer.projects : undefined,
    };
  }

  private audit(input: Omit<AuditInput, 'agent'>): Promise<void> {
    return auditWriterFor(this.deps.store.db.knex).write(buildAuditEvent(this.auditInput(input), this.deps.auditSource), { now: true });
  }

  private details(assoc?: association.Association): Record<string, string> {
    return {
      service: 'DIMSE C-STORE',
      callingAETitle: this.callingAETitle,
      calledAETitle: (assoc?.getCalledAeTitle() ?? this.deps.config.aeTitle).trim(),
    };
  }
}
