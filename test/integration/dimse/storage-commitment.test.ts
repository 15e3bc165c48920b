/**
 * Storage Commitment Push Model SCP (src/dimse/storage-commitment.ts): a modality stores with
 * dcmtk's storescu, then asks for commitment with dcmjs-dimse's Client (dcmtk has no commitment
 * SCU). The report comes on the same association, or on a new one to the modality's own
 * listener when the first association is gone.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  Client,
  Dataset,
  Server,
  association as dimseAssociation,
  requests as dimseRequests,
  responses as dimseResponses,
  type responses,
} from 'dcmjs-dimse';
import type { AuditEvent } from '../../../src/audit/audit-event';
import { startAppDimseListener, type DimseListener } from '../../../src/dimse/dimse-listener';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { dcmtk } from '../../helpers/dcmtk';
import { AcceptingScp, freePort } from '../../helpers/dimse-peer';
import { startTestApp, type TestApp } from '../../helpers/test-app';

const AE = 'IMAGING_LAKE';
const COMMITMENT = '1.2.840.10008.1.20.1';
const COMMITMENT_INSTANCE = '1.2.840.10008.1.20.1.1';
const CT = '1.2.840.10008.5.1.4.1.1.2';
const PROJECT = `sc-${randomUUID().slice(0, 8)}`;

interface Report {
  eventTypeId: number;
  elements: Record<string, any>;
}

interface Outcome {
  status?: number;
  comment?: string;
  report?: Report;
}

/**
 * Sends an N-ACTION Request Storage Commitment. `abortAfterResponse`: the requester aborts the
 * association as soon as the N-ACTION response arrives, leaving the report to a new association.
 */
function requestCommitment(
  port: number,
  callingAE: string,
  elements: Record<string, unknown>,
  options: { abortAfterResponse?: boolean; instanceUid?: string; actionTypeId?: number } = {},
): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const outcome: Outcome = {};
    const client = new Client();
    const req = new dimseRequests.NActionRequest(COMMITMENT, options.instanceUid ?? COMMITMENT_INSTANCE, options.actionTypeId ?? 1);
    req.setDataset(new Dataset(elements));
    req.on('response', (r: responses.NActionResponse) => {
      outcome.status = r.getStatus();
      outcome.comment = r.getErrorComment();
      if (options.abortAfterResponse) client.abort();
    });
    client.addRequest(req);
    client.on('nEventReportRequest', (event: dimseRequests.NEventReportRequest, respond: (r: responses.NEventReportResponse) => void) => {
      // A requester that has aborted neither takes nor answers a report.
      if (options.abortAfterResponse) return;
      outcome.report = { eventTypeId: event.getEventTypeId(), elements: event.getDataset()!.getElements() };
      const r = dimseResponses.NEventReportResponse.fromRequest(event);
      r.setStatus(0);
      respond(r);
    });
    client.on('networkError', reject);
    client.on('closed', () => resolve(outcome));
    client.send('127.0.0.1', port, callingAE, AE, { associationLingerTimeout: options.abortAfterResponse ? 0 : 1_500 });
  });
}

/** Failed SOP Sequence items as [instance, reason]. */
const failures = (r: Report) => ((r.elements.FailedSOPSequence ?? []) as Array<Record<string, unknown>>).map((i) => [i.ReferencedSOPInstanceUID, i.FailureReason]);
const committed = (r: Report) => ((r.elements.ReferencedSOPSequence ?? []) as Array<Record<string, unknown>>).map((i) => i.ReferencedSOPInstanceUID);

describe('DIMSE Storage Commitment Push Model SCP', () => {
  let t: TestApp;
  let scp: DimseListener;
  let dir: string;
  let modalityPort: number;
  const stored: Array<{ sopInstanceUID: string; sopClassUID: string }> = [];
  let projectInstance: string;

  beforeAll(async () => {
    t = await startTestApp();
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'il-sc-'));
    modalityPort = await freePort();
    scp = await startAppDimseListener(
      t.app,
      {
        port: 0,
        host: '127.0.0.1',
        aeTitle: AE,
        peers: [
          { aeTitle: 'MODALITY', host: '127.0.0.1', port: modalityPort, projects: [], services: ['store'] },
          { aeTitle: 'PROJ_MODALITY', projects: [PROJECT], services: ['store'] },
          { aeTitle: 'VIEWER', projects: [], services: ['find'] },
        ],
      },
      'http://imaging-lake.test/dicomweb',
    );
    const files: string[] = [];
    for (let i = 0; i < 3; i++) {
      const instance = createSyntheticInstance({ patientID: `SC-${i}`, rows: 8, columns: 8, bitsAllocated: 8, seed: i });
      const file = path.join(dir, `${i}.dcm`);
      await fs.writeFile(file, instance.bytes);
      files.push(file);
      stored.push({ sopInstanceUID: instance.sopInstanceUID, sopClassUID: CT });
    }
    expect((await dcmtk('storescu', ['-aet', 'MODALITY', '-aec', AE, '127.0.0.1', String(scp.port), ...files])).code).toBe(0);
    const own = createSyntheticInstance({ patientID: 'SC-P', rows: 8, columns: 8, bitsAllocated: 8 });
    await fs.writeFile(path.join(dir, 'own.dcm'), own.bytes);
    expect((await dcmtk('storescu', ['-aet', 'PROJ_MODALITY', '-aec', AE, '127.0.0.1', String(scp.port), path.join(dir, 'own.dcm')])).code).toBe(0);
    projectInstance = own.sopInstanceUID;
  }, 120_000);

  afterAll(async () => {
    await scp?.close();
    await t?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  const references = (...items: Array<{ sopClassUID: string; sopInstanceUID: string }>) =>
    items.map((i) => ({ ReferencedSOPClassUID: i.sopClassUID, ReferencedSOPInstanceUID: i.sopInstanceUID }));

  test('stored instances are committed, on the same association: event type 1 with the Retrieve AE Title', async () => {
    const transaction = newUid();
    const outcome = await requestCommitment(scp.port, 'MODALITY', { TransactionUID: transaction, ReferencedSOPSequence: references(stored[0], stored[1]) });
    expect(outcome.status).toBe(0x0000);
    expect(outcome.report).toBeDefined();
    expect(outcome.report!.eventTypeId).toBe(1);
    expect(outcome.report!.elements.TransactionUID).toBe(transaction);
    expect(outcome.report!.elements.RetrieveAETitle).toBe(AE);
    expect(committed(outcome.report!).sort()).toEqual([stored[0].sopInstanceUID, stored[1].sopInstanceUID].sort());
    expect(outcome.report!.elements.FailedSOPSequence).toBeUndefined();

    const events = (await t.app.db.knex('audit_events').select('resource'))
      .map((r: { resource: unknown }) => (typeof r.resource === 'string' ? JSON.parse(r.resource) : r.resource) as AuditEvent)
      .filter((e) => e.entity?.some((x) => x.detail?.some((d) => d.type === 'transactionUID' && d.valueString === transaction)));
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ outcome: '0', type: { code: '110112' } });
  });

  test('what is not kept is reported failed with its reason: unknown instance, other SOP Class, bytes missing from the store (event type 2)', async () => {
    // The third instance's bytes are removed from the blob store behind the index's back.
    const row = await t.app.db.knex('instances').where({ sop_instance_uid: stored[2].sopInstanceUID }).first('blob_key');
    await t.app.blobs.delete(String(row.blob_key));
    const unknown = { sopClassUID: CT, sopInstanceUID: newUid() };
    const wrongClass = { sopClassUID: '1.2.840.10008.5.1.4.1.1.4', sopInstanceUID: stored[1].sopInstanceUID };
    const outcome = await requestCommitment(scp.port, 'MODALITY', { TransactionUID: newUid(), ReferencedSOPSequence: references(stored[0], unknown, wrongClass, stored[2]) });
    expect(outcome.status).toBe(0x0000);
    expect(outcome.report!.eventTypeId).toBe(2);
    expect(committed(outcome.report!)).toEqual([stored[0].sopInstanceUID]);
    expect(failures(outcome.report!)).toEqual([
      [unknown.sopInstanceUID, 0x0112],
      [stored[1].sopInstanceUID, 0x0119],
      [stored[2].sopInstanceUID, 0x0110],
    ]);
  });

  test('a peer tied to a project gets no commitment for instances outside it (reported as not found)', async () => {
    const outcome = await requestCommitment(scp.port, 'PROJ_MODALITY', { TransactionUID: newUid(), ReferencedSOPSequence: references(stored[0], { sopClassUID: CT, sopInstanceUID: projectInstance }) });
    expect(committed(outcome.report!)).toEqual([projectInstance]);
    expect(failures(outcome.report!)).toEqual([[stored[0].sopInstanceUID, 0x0112]]);
  });

  test('when the requester is gone before the report, it comes on a new association to its listener, our AE proposing the SCP role', async () => {
    const received: Report[] = [];
    let proposedScpRole: boolean | undefined;
    class Modality extends AcceptingScp {
      override associationRequested(a: dimseAssociation.Association): void {
        for (const { id } of a.getPresentationContexts()) {
          const c = a.getPresentationContext(id);
          if (c.getAbstractSyntaxUid() === COMMITMENT) proposedScpRole = c.getProviderRole();
        }
        super.associationRequested(a);
      }
      override nEventReportRequest(event: dimseRequests.NEventReportRequest, respond: (r: responses.NEventReportResponse) => void): void {
        received.push({ eventTypeId: event.getEventTypeId(), elements: event.getDataset()!.getElements() });
        const r = dimseResponses.NEventReportResponse.fromRequest(event);
        r.setStatus(0);
        respond(r);
      }
    }
    const server = new Server(Modality);
    server.listen(modalityPort);
    try {
      const transaction = newUid();
      const outcome = await requestCommitment(scp.port, 'MODALITY', { TransactionUID: transaction, ReferencedSOPSequence: references(stored[0]) }, { abortAfterResponse: true });
      expect(outcome.status).toBe(0x0000);
      expect(outcome.report).toBeUndefined();
      for (let i = 0; i < 100 && received.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
      expect(received).toHaveLength(1);
      expect(received[0].eventTypeId).toBe(1);
      expect(received[0].elements.TransactionUID).toBe(transaction);
      expect(proposedScpRole).toBe(true);
    } finally {
      server.close();
    }
  });

  test('a malformed request is refused with the N-ACTION status: no Transaction UID (0120), another SOP Instance (0112), another action (0123)', async () => {
    const refs = references(stored[0]);
    const noTransaction = await requestCommitment(scp.port, 'MODALITY', { ReferencedSOPSequence: refs });
    const otherInstance = await requestCommitment(scp.port, 'MODALITY', { TransactionUID: newUid(), ReferencedSOPSequence: refs }, { instanceUid: '1.2.3' });
    const otherAction = await requestCommitment(scp.port, 'MODALITY', { TransactionUID: newUid(), ReferencedSOPSequence: refs }, { actionTypeId: 2 });
    expect([noTransaction.status, otherInstance.status, otherAction.status]).toEqual([0x0120, 0x0112, 0x0123]);
    expect(noTransaction.comment).toMatch(/Transaction UID/);
    for (const o of [noTransaction, otherInstance, otherAction]) expect(o.report).toBeUndefined();
  });

  test('a peer that may not store is not offered Storage Commitment', async () => {
    const outcome = await requestCommitment(scp.port, 'VIEWER', { TransactionUID: newUid(), ReferencedSOPSequence: references(stored[0]) });
    expect(outcome).toEqual({});
  });
});
