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
 * a C-STORE status. Verification (C-ECHO) is answered.
 *
 * Query/Retrieve (PS3.4 Annex C, Patient and Study Root) for the peers allowed it: C-FIND runs
 * the QIDO-RS search (query-retrieve.ts), C-GET sends the instances back on the same association
 * and C-MOVE to a configured destination, as stored or transcoded (sub-operations.ts). A peer
 * tied to projects finds and retrieves their studies only. Every query and retrieve is audited
 * before anything is answered.
 */
import net from 'node:net';
import { PassThrough, Writable } from 'node:stream';
import tls from 'node:tls';
import { Dataset, Implementation, Scp, constants, log as dimseLog, requests, responses, type association } from 'dcmjs-dimse';
import type { DimseConfig, DimsePeer } from '../config';
import { buildAuditEvent, type AuditInput, type AuditSource } from '../audit/audit-event';
import { auditStatementOf } from '../audit/audit-response';
import { auditWriterFor } from '../audit/audit-writer';
import { IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, buildFileMeta } from '../dicomweb/wado-rs';
import { storeInstances, type StoreServices } from '../dicomweb/stow-rs';
import type { Logger } from '../logger';
import type { TranscodeHook } from '../dicomweb/wado-rs';
import { restrictStudiesToProjects } from '../auth/project-filters';
import type { AppHandle } from '../app';
import { createTranscodeHook } from '../dicom/transcode-hook';
import type { DicomJson } from '../dicom/types';
import { findInstancesByKeys, type StoredInstance } from '../db/wado-index';
import { TransferSyntaxUid } from '../dicom/transfer-syntax';
import { isRetryableDbError } from '../db/database';
import { judgeAssociation, judgeContext } from './negotiation';
import { auditOutcomeOf, storeStatusOf, storeStatusOfError, type StoreStatus } from './store-status';
import { IdentifierError, QUERY_RETRIEVE_SOP_CLASSES, parseFindIdentifier, parseRetrieveIdentifier, type InformationModel } from './query';
import { checkQuery, datasetOf, identifierOf, openMoveAssociation, runFind } from './query-retrieve';
import { acceptedSyntaxes, chooseTransferSyntax, countStatus, exchange, readDataSet, sendInstance, type MoveOriginator, type SendLink, type SubOperationCounts } from './sub-operations';
import { isReachable, openAssociation, type ReachablePeer } from './outbound-association';
import { loadDimseTls, outboundTls, type DimseTls } from './dimse-tls';
import { createPeerDirectory, type PeerDirectory } from './peer-directory';
import {
  CommitmentRequestError,
  STORAGE_COMMITMENT_SOP_CLASS,
  STORAGE_COMMITMENT_SOP_INSTANCE,
  checkCommitment,
  eventReportOf,
  parseCommitmentRequest,
  type CommitmentResult,
} from './storage-commitment';

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
  /** Converts instances for a C-GET/C-MOVE receiver that does not accept the stored transfer syntax. */
  transcoder?: TranscodeHook;
  /** Who may associate and where C-MOVE sends: `config.peers` and the managed ones. */
  peers: PeerDirectory;
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

/**
 * The DIMSE listener of a running app: stores take its STOW-RS services, audits name its source,
 * C-GET/C-MOVE receivers that refuse the stored transfer syntax get WADO-RS's transcoder.
 */
export function startAppDimseListener(app: Pick<AppHandle, 'store' | 'auth' | 'db' | 'blobs' | 'logger'>, config: DimseConfig, dicomwebBaseUrl: string): Promise<DimseListener> {
  return startDimseListener({
    config,
    store: app.store,
    auditSource: app.auth.audit.source,
    dicomwebBaseUrl,
    transcoder: createTranscodeHook({ db: app.db, blobs: app.blobs }),
    peers: createPeerDirectory(app.db.knex, config.peers, app.logger),
    logger: app.logger,
  });
}

/**
 * Starts the DIMSE listener on `config.host`:`config.port`: plain TCP, or TLS only when
 * `config.tls` names a certificate (a peer that fails the handshake never reaches association).
 */
export async function startDimseListener(deps: DimseListenerDeps): Promise<DimseListener> {
  const open = new Set<PeerScp>();
  const secure = deps.config.tls ? await loadDimseTls(deps.config.tls) : undefined;
  const accept = (socket: net.Socket) => {
    socket.on('error', (err) => deps.logger.debug({ err }, 'DIMSE connection error'));
    const scp = new PeerScp(socket, deps, secure);
    open.add(scp);
    socket.once('close', () => open.delete(scp));
  };
  // Not TLS at all, no certificate, or one the CA did not sign: a failed sign-in (IHE BALP / DICOM 110114).
  const refuse = (address: string | undefined, reason: string) => {
    deps.logger.warn({ address, reason }, 'DIMSE TLS connection refused');
    const input: AuditInput = { protocol: 'auth', action: 'login', outcome: '4', outcomeDescription: `DICOM TLS handshake failed: ${reason}`, agent: { address }, details: { service: 'DIMSE TLS', calledAETitle: deps.config.aeTitle } };
    auditWriterFor(deps.store.db.knex)
      .write(buildAuditEvent(input, deps.auditSource), { now: true })
      .catch((err: unknown) => deps.logger.error({ err }, 'audit of a refused DIMSE TLS connection failed'));
  };
  const server = secure
    ? tls.createServer(secure.server, (socket) => {
        const refusal = secure.refusal(socket);
        if (refusal === undefined) return accept(socket);
        refuse(socket.remoteAddress, refusal);
        socket.destroy();
      })
    : net.createServer(accept);
  if (secure) {
    server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
      // Closed before any TLS was spoken (a load balancer's or a monitor's TCP check): no credentials were offered.
      if (err.code === 'ECONNRESET') return deps.logger.debug({ err, address: socket.remoteAddress }, 'DIMSE TLS connection closed before the handshake');
      refuse(socket.remoteAddress, err.message);
    });
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(deps.config.port, deps.config.host, () => resolve());
  });
  server.on('error', (err) => deps.logger.error({ err }, 'DIMSE listener error'));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : deps.config.port;
  deps.logger.info({ host: deps.config.host, port, aeTitle: deps.config.aeTitle, peers: deps.config.peers.length, tls: secure ? (deps.config.tls?.caFile ? 'mutual' : 'server') : 'off' }, 'DIMSE listener listening');
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
class PeerScp extends Scp {
  private peer: DimsePeer | undefined;
  private callingAETitle = '';
  private assoc: association.Association | undefined;
  /** C-STOREs whose data set is being received or stored, by their request. */
  private readonly receipts = new Map<requests.CStoreRequest, Receipt>();
  /** Query/retrieve operations under way (finish waits for them). */
  private readonly operations = new Set<Promise<void>>();
  /** Message IDs of C-FIND/C-GET/C-MOVE requests the peer cancelled (C-CANCEL, PS3.7 9.3.2.3). */
  private readonly cancelled = new Set<number>();

  constructor(
    private readonly socketOf: net.Socket,
    private readonly deps: DimseListenerDeps,
    /** The listener's TLS material: associations this one opens to its peers use it. */
    private readonly secure: DimseTls | undefined,
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
    void this.deps.peers.list().then((peers) => this.judge(assoc, peers));
  }

  private judge(assoc: association.Association, peers: readonly DimsePeer[]): void {
    const address = this.socketOf.remoteAddress;
    const verdict = judgeAssociation({ aeTitle: this.deps.config.aeTitle, peers }, assoc.getCalledAeTitle(), assoc.getCallingAeTitle(), address);
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
    this.assoc = assoc;
    for (const { id } of assoc.getPresentationContexts()) {
      const context = assoc.getPresentationContext(id);
      const judged = judgeContext(context.getAbstractSyntaxUid(), context.getTransferSyntaxUids(), verdict.peer.services);
      if (judged.result === 'accept') context.setResult(PresentationContextResult.Accept, judged.transferSyntaxUID);
      else if (judged.result === 'abstract-syntax-not-supported') context.setResult(PresentationContextResult.RejectAbstractSyntaxNotSupported);
      else context.setResult(PresentationContextResult.RejectTransferSyntaxesNotSupported);
    }
    this.deps.logger.info({ callingAETitle: this.callingAETitle, address }, 'DIMSE association accepted');
    try {
      this.sendAssociationAccept();
    } catch (err) {
      this.deps.logger.debug({ err }, 'DIMSE association accept not sent (the peer went away)');
    }
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
    const storing = !this.peer
      ? Promise.resolve<StoreStatus>({ status: 0x0124, comment: 'no association was accepted' })
      : this.peer.services.includes('store')
        ? this.store(body, expected, this.peer)
        : this.refuseStore(expected.sopInstanceUID);
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

  override cCancelRequest(request: requests.CCancelRequest): void {
    this.cancelled.add(request.getMessageIdBeingRespondedTo());
  }

  override cFindRequest(request: requests.CFindRequest, respond: (responses: responses.CFindResponse[]) => void): void {
    this.track(this.find(request, respond));
  }

  override cGetRequest(request: requests.CGetRequest, respond: (responses: responses.CGetResponse[]) => void): void {
    this.track(this.retrieve('get', request, (r) => respond([r as responses.CGetResponse])));
  }

  override cMoveRequest(request: requests.CMoveRequest, respond: (responses: responses.CMoveResponse[]) => void): void {
    this.track(this.retrieve('move', request, (r) => respond([r as responses.CMoveResponse])));
  }

  override nActionRequest(request: requests.NActionRequest, respond: (response: responses.NActionResponse) => void): void {
    this.track(this.commit(request, respond));
  }

  /** A-ABORT from the peer (PS3.8 7.3): what is still arriving is dropped, and the connection closed. */
  override abort(): void {
    this.dropReceipts('the association was aborted');
    this.socketOf.end();
  }

  /** Waits for the stores under way, then ends the connection. */
  async finish(): Promise<void> {
    await Promise.allSettled([...this.receipts.values()].map((r) => r.status));
    await Promise.allSettled([...this.operations]);
    this.socketOf.end();
    // A peer that keeps its half of the connection open does not hold the shutdown up.
    setTimeout(() => this.socketOf.destroy(), 5_000).unref();
  }

  /** A C-STORE from a peer allowed to retrieve but not to store (it proposed storage classes for C-GET). */
  private async refuseStore(sopInstanceUID: string): Promise<StoreStatus> {
    const status: StoreStatus = { status: 0x0124, comment: 'this peer is not allowed to store' };
    await this.audit({ protocol: 'dimse', action: 'create', outcome: '4', outcomeDescription: status.comment, details: { ...this.details(), sopInstanceUID } }).catch((err: unknown) =>
      this.deps.logger.error({ err }, 'audit of a refused DIMSE C-STORE failed'),
    );
    return status;
  }

  private track(operation: Promise<void>): void {
    const tracked = operation.catch((err: unknown) => this.deps.logger.error({ err }, 'DIMSE query/retrieve failed'));
    this.operations.add(tracked);
    void tracked.finally(() => this.operations.delete(tracked));
  }

  /**
   * Sends a response. dcmjs-dimse's responder callback may be called once per request (it is
   * its event emitter's continuation), so pending responses go out through sendResponse and the
   * final one through the callback.
   */
  private answer(request: requests.Request, response: responses.Response, final?: () => void): void {
    try {
      if (final) final();
      else this.sendResponse(request, response);
    } catch (err) {
      // The association ended while the operation ran: nobody is left to tell.
      this.deps.logger.debug({ err }, 'DIMSE response not sent');
    }
  }

  /** The studies this peer may find and retrieve: its projects', or every study for a peer tied to none. */
  private restriction() {
    const projects = this.peer?.projects ?? [];
    return projects.length > 0 ? restrictStudiesToProjects(projects) : undefined;
  }

  /** The transfer syntax of the presentation context a request came on (its identifier is encoded in it). */
  private contextSyntax(request: requests.Request): string {
    const context = this.assoc?.getAcceptedPresentationContextFromRequest(request);
    return context?.getAcceptedTransferSyntaxUid() ?? TransferSyntaxUid.ImplicitVRLittleEndian;
  }

  /** C-FIND (PS3.4 C.4.1): pending responses with each match, then the final status. */
  private async find(request: requests.CFindRequest, respond: (responses: responses.CFindResponse[]) => void): Promise<void> {
    const ts = this.contextSyntax(request);
    const reply = (status: number, identifier?: DicomJson, comment?: string) => {
      const response = responses.CFindResponse.fromRequest(request);
      response.setAffectedSopClassUid(request.getAffectedSopClassUid());
      response.setStatus(status);
      if (identifier) response.setDataset(datasetOf(identifier, ts));
      if (comment) response.setErrorComment(comment.slice(0, 64));
      this.answer(request, response, status === 0xff00 ? undefined : () => respond([response]));
    };
    const model = QUERY_RETRIEVE_SOP_CLASSES.get(request.getAffectedSopClassUid());
    const details = this.details(this.assoc, 'DIMSE C-FIND');
    let parsed;
    try {
      if (!model || model.operation !== 'find' || !this.peer?.services.includes('find')) throw new IdentifierError(0x0124, 'this peer is not allowed to query');
      parsed = parseFindIdentifier(model.model, identifierOf(request.getDataset()));
      checkQuery(parsed);
    } catch (err) {
      // Every C-FIND gets a final response, an unexpected failure too (else the requester waits for ever).
      const refused = err instanceof IdentifierError ? err : undefined;
      if (!refused) this.deps.logger.error({ err }, 'DIMSE C-FIND identifier could not be read');
      const comment = refused?.message ?? 'the identifier could not be processed';
      await this.audit({ protocol: 'dimse', action: 'search', outcome: refused ? '4' : '8', outcomeDescription: comment, details }).catch(() => undefined);
      return reply(refused?.status ?? 0x0110, undefined, comment);
    }
    // The query is on the trail before anything is answered (IHE BALP Query; 110112).
    try {
      await this.audit({ protocol: 'dimse', action: 'search', query: parsed.text, details });
    } catch (err) {
      this.deps.logger.error({ err }, 'audit of a DIMSE C-FIND failed');
      return reply(0xa700, undefined, 'the audit trail is unavailable');
    }
    const messageId = request.getMessageId();
    try {
      const outcome = await runFind(
        {
          search: { db: this.deps.store.db },
          restrictStudies: this.restriction(),
          dicomwebBaseUrl: this.deps.dicomwebBaseUrl,
          aeTitle: this.deps.config.aeTitle,
          cancelled: () => this.cancelled.has(messageId),
        },
        parsed,
        (identifier) => reply(0xff00, identifier),
      );
      if (outcome === 'cancelled') reply(0xfe00, undefined, 'cancelled');
      else if (outcome === 'truncated') reply(0xa700, undefined, 'too many studies for a Patient level answer');
      else reply(0x0000);
    } catch (err) {
      this.deps.logger.error({ err }, 'DIMSE C-FIND failed');
      reply(isRetryableDbError(err) ? 0xa700 : 0xc000, undefined, isRetryableDbError(err) ? 'the index database is unavailable' : 'the query could not be run');
    } finally {
      this.cancelled.delete(messageId);
    }
  }

  /**
   * C-GET (PS3.4 C.4.3) and C-MOVE (C.4.2): the instances the identifier names go to the requester
   * on this association, or to the move destination on a new one, each as a C-STORE
   * sub-operation; a pending response after each, then the final counts.
   */
  private async retrieve(operation: 'get' | 'move', request: requests.CGetRequest | requests.CMoveRequest, respond: (response: responses.CGetResponse | responses.CMoveResponse) => void): Promise<void> {
    const counts: SubOperationCounts = { remaining: 0, completed: 0, failed: 0, warning: 0, failedUids: [] };
    const ts = this.contextSyntax(request);
    const reply = (status: number, comment?: string, final = true) => {
      const response = operation === 'get' ? responses.CGetResponse.fromRequest(request as requests.CGetRequest) : responses.CMoveResponse.fromRequest(request as requests.CMoveRequest);
      response.setAffectedSopClassUid(request.getAffectedSopClassUid());
      response.setStatus(status);
      // PS3.4 C.4.2.1.6: Remaining only while pending or in a cancel; the others always.
      if (!final || status === 0xfe00) response.setRemaining(counts.remaining);
      response.setCompleted(counts.completed);
      response.setFailures(counts.failed);
      response.setWarnings(counts.warning);
      if (final && counts.failedUids.length > 0) response.setDataset(datasetOf({ '00080058': { vr: 'UI', Value: counts.failedUids } }, ts));
      if (comment) response.setErrorComment(comment.slice(0, 64));
      this.answer(request, response, final ? () => respond(response) : undefined);
    };
    const service = `DIMSE C-${operation.toUpperCase()}`;
    const details = this.details(this.assoc, service);
    const model = QUERY_RETRIEVE_SOP_CLASSES.get(request.getAffectedSopClassUid());
    let instances: StoredInstance[];
    let destination: ReachablePeer | undefined;
    try {
      if (!model || model.operation !== operation || !this.peer?.services.includes(operation)) throw new IdentifierError(0x0124, `this peer is not allowed to C-${operation.toUpperCase()}`);
      if (operation === 'move') {
        const name = String(request.getCommandDataset().getElement('MoveDestination') ?? '').trim();
        details.moveDestination = name;
        destination = (await this.deps.peers.list()).find((p): p is ReachablePeer => p.aeTitle === name && isReachable(p));
        // PS3.4 C.4.2.1.5: an AE title this server has no address for.
        if (!destination) throw new IdentifierError(0xa801, `move destination "${name}" is unknown`);
      }
      instances = await this.findInstances(model.model, request);
    } catch (err) {
      const refused = err instanceof IdentifierError ? err : undefined;
      if (!refused) this.deps.logger.error({ err }, `${service} look-up failed`);
      const status = refused?.status ?? 0xa701;
      const comment = refused?.message ?? 'the index database is unavailable';
      await this.audit({ protocol: 'dimse', action: 'read', outcome: refused ? '4' : '8', outcomeDescription: comment, details }).catch(() => undefined);
      return reply(status, comment);
    }
    const studyUids = [...new Set(instances.map((i) => i.studyInstanceUID))];
    // The transfer is on the trail before the first instance leaves (110104, action R).
    try {
      await this.audit({ protocol: 'dimse', action: 'read', studyUids, details: { ...details, instances: String(instances.length) } });
    } catch (err) {
      this.deps.logger.error({ err }, `audit of a ${service} failed`);
      return reply(0xa702, 'the audit trail is unavailable');
    }
    counts.remaining = instances.length;
    if (instances.length === 0) return reply(0x0000);

    let link: SendLink & { release(): Promise<void> };
    if (destination) {
      try {
        link = await openMoveAssociation(destination, this.deps.config.aeTitle, instances, outboundTls(destination, this.secure));
      } catch (err) {
        this.deps.logger.warn({ err, destination: destination.aeTitle }, 'C-MOVE destination association failed');
        counts.failed = instances.length;
        counts.remaining = 0;
        return reply(0xa702, (err as Error).message);
      }
    } else {
      link = { network: this, socket: this.socketOf, association: this.assoc!, release: async () => undefined };
    }
    const originator: MoveOriginator | undefined = destination ? { aeTitle: this.callingAETitle, messageId: request.getMessageId() } : undefined;
    const messageId = request.getMessageId();
    let cancelled = false;
    try {
      for (const instance of instances) {
        if (this.cancelled.has(messageId)) {
          cancelled = true;
          break;
        }
        // The association is gone: the rest cannot be sent (counted as failed below).
        if (link.socket.destroyed) break;
        const outcome = await this.sendOne(link, instance, originator);
        countStatus(counts, instance.sopInstanceUID, outcome);
        if (counts.remaining > 0) reply(0xff00, undefined, false);
      }
    } finally {
      this.cancelled.delete(messageId);
      await link.release();
    }
    if (cancelled) return reply(0xfe00, 'cancelled');
    for (const instance of instances.slice(instances.length - counts.remaining)) countStatus(counts, instance.sopInstanceUID, 0x0110);
    // PS3.4 C.4.2.1.5/C.4.3.1.4: B000 when any sub-operation failed or warned.
    reply(counts.failed + counts.warning > 0 ? 0xb000 : 0x0000);
  }

  /**
   * Storage Commitment (PS3.4 J.3.2): the referenced instances are checked first, then the
   * N-ACTION response and the N-EVENT-REPORT with the result go out back to back, on this
   * association; when it has ended before the report is acknowledged, on a new one to the peer
   * (when it has a host and port).
   */
  private async commit(request: requests.NActionRequest, respond: (response: responses.NActionResponse) => void): Promise<void> {
    const reply = (status: number, comment?: string) => {
      const response = responses.NActionResponse.fromRequest(request);
      response.setStatus(status);
      if (comment) response.setErrorComment(comment.slice(0, 64));
      this.answer(request, response, () => respond(response));
    };
    const details = this.details(this.assoc, 'DIMSE Storage Commitment');
    let result: CommitmentResult;
    try {
      if (request.getRequestedSopClassUid() !== STORAGE_COMMITMENT_SOP_CLASS) throw new CommitmentRequestError(0x0118, 'no such SOP Class');
      if (request.getRequestedSopInstanceUid() !== STORAGE_COMMITMENT_SOP_INSTANCE) throw new CommitmentRequestError(0x0112, `Requested SOP Instance is not ${STORAGE_COMMITMENT_SOP_INSTANCE}`);
      if (request.getActionTypeId() !== 1) throw new CommitmentRequestError(0x0123, 'no such action type (1 is Request Storage Commitment)');
      if (!this.peer?.services.includes('store')) throw new CommitmentRequestError(0x0124, 'this peer is not allowed to store');
      let parsed;
      try {
        parsed = parseCommitmentRequest(identifierOf(request.getDataset()));
      } catch (err) {
        if (err instanceof IdentifierError) throw new CommitmentRequestError(0x0120, err.message);
        throw err;
      }
      details.transactionUID = parsed.transactionUID;
      result = await checkCommitment(this.deps.store.db.knex, this.deps.store.blobs, parsed, this.restriction());
    } catch (err) {
      const refused = err instanceof CommitmentRequestError ? err : undefined;
      if (!refused) this.deps.logger.error({ err }, 'DIMSE storage commitment failed');
      await this.audit({ protocol: 'dimse', action: 'search', outcome: refused ? '4' : '8', outcomeDescription: refused?.message ?? 'processing failure', details }).catch(() => undefined);
      return reply(refused?.status ?? 0x0110, refused?.message ?? 'the commitment could not be checked');
    }
    // Which of the peer's instances are kept is on the trail before it is told.
    try {
      await this.audit({
        protocol: 'dimse',
        action: 'search',
        query: `storage-commitment?transaction=${result.transactionUID}&committed=${result.committed.length}&failed=${result.failed.length}`,
        details,
      });
    } catch (err) {
      this.deps.logger.error({ err }, 'audit of a DIMSE storage commitment failed');
      return reply(0x0110, 'the audit trail is unavailable');
    }
    reply(0x0000);
    await this.reportCommitment(result);
  }

  /** Sends the N-EVENT-REPORT of a commitment (PS3.4 J.3.3), here or on a new association. */
  private async reportCommitment(result: CommitmentResult): Promise<void> {
    const { eventTypeId, dataSet } = eventReportOf(result, this.deps.config.aeTitle);
    const report = (link: SendLink) => {
      const event = new requests.NEventReportRequest(STORAGE_COMMITMENT_SOP_CLASS, STORAGE_COMMITMENT_SOP_INSTANCE, eventTypeId);
      event.setDataset(datasetOf(dataSet, acceptedSyntaxes(link.association, STORAGE_COMMITMENT_SOP_CLASS)[0] ?? TransferSyntaxUid.ImplicitVRLittleEndian));
      return exchange<responses.NEventReportResponse>(link, event);
    };
    const here: SendLink = { network: this, socket: this.socketOf, association: this.assoc! };
    if (await report(here)) return;
    const peer = this.peer;
    if (!peer || !isReachable(peer)) {
      this.deps.logger.warn({ callingAETitle: this.callingAETitle, transactionUID: result.transactionUID }, 'storage commitment report not delivered: the association ended and the peer has no host and port');
      return;
    }
    try {
      // PS3.4 J.3.3: the SCP opens the association, proposing the SCP role.
      const link = await openAssociation(peer, this.deps.config.aeTitle, [
        { abstractSyntaxUID: STORAGE_COMMITMENT_SOP_CLASS, transferSyntaxUIDs: [TransferSyntaxUid.ExplicitVRLittleEndian, TransferSyntaxUid.ImplicitVRLittleEndian], scpRole: true },
      ], outboundTls(peer, this.secure));
      try {
        if (!(await report(link))) this.deps.logger.warn({ peer: peer.aeTitle, transactionUID: result.transactionUID }, 'storage commitment report not acknowledged');
      } finally {
        await link.release();
      }
    } catch (err) {
      this.deps.logger.warn({ err, peer: peer.aeTitle, transactionUID: result.transactionUID }, 'storage commitment report not delivered');
    }
  }

  /** The instances a C-GET/C-MOVE identifier names, within the peer's studies. */
  private findInstances(model: InformationModel, request: requests.Request): Promise<StoredInstance[]> {
    return findInstancesByKeys(this.deps.store.db.knex, parseRetrieveIdentifier(model, identifierOf(request.getDataset())), this.restriction());
  }

  /** One C-STORE sub-operation: the instance in a syntax the receiver accepted, and the receiver's status. */
  private async sendOne(link: SendLink, instance: StoredInstance, originator?: MoveOriginator): Promise<number> {
    const transcoder = this.deps.transcoder;
    const ts = chooseTransferSyntax(instance.transferSyntaxUID, acceptedSyntaxes(link.association, instance.sopClassUID), transcoder ? (from, to) => transcoder.canTranscode(from, to) : undefined);
    if (!ts) {
      this.deps.logger.info({ sopInstanceUID: instance.sopInstanceUID, sopClassUID: instance.sopClassUID, storedAs: instance.transferSyntaxUID }, 'no accepted presentation context for a retrieved instance');
      return 0xa702;
    }
    let dataSet: Buffer;
    try {
      dataSet = await readDataSet({ blobs: this.deps.store.blobs, transcoder }, instance, ts);
    } catch (err) {
      this.deps.logger.error({ err, sopInstanceUID: instance.sopInstanceUID }, 'a retrieved instance could not be read');
      return 0xa702;
    }
    const { status } = await sendInstance(link, instance, dataSet, ts, originator);
    return status;
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

  private details(assoc?: association.Association, service = 'DIMSE C-STORE'): Record<string, string> {
    return {
      service,
      callingAETitle: this.callingAETitle,
      calledAETitle: (assoc?.getCalledAeTitle() ?? this.deps.config.aeTitle).trim(),
    };
  }
}
