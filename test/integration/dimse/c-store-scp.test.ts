/**
 * The DIMSE C-STORE SCP (src/dimse) with real clients: dcmtk's echoscu and storescu, and
 * dcmjs-dimse's Client where a test needs a status code or a command storescu cannot send.
 * Instances take STOW-RS's path (same index, projects, audit in the index transaction), so these
 * tests check what DIMSE adds: negotiation, the status sent back, and what was kept.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import request from 'supertest';
import { Client, requests as dimseRequests, type responses } from 'dcmjs-dimse';
import type { AuditEvent } from '../../../src/audit/audit-event';
import { startAppDimseListener, type DimseListener } from '../../../src/dimse/dimse-listener';
import { createSyntheticInstance } from '../../../src/generate/synthetic-dicom';
import { binaryBody } from '../../helpers/binary-body';
import { buildMultipart } from '../../helpers/multipart-body';
import { dcmtk } from '../../helpers/dcmtk';
import { sharedData, startTestApp, type TestApp } from '../../helpers/test-app';

// dcmjs ships no type declarations.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const dcmjs = require('dcmjs');

const AE = 'IMAGING_LAKE';
const PROJECT = `dimse-${randomUUID().slice(0, 8)}`;
const OTHER_PROJECT = `other-${randomUUID().slice(0, 8)}`;

/** Sends one file with dcmjs-dimse; `edit` may change the request's command first. Resolves with the C-STORE status. */
function cStore(port: number, callingAE: string, file: string, edit?: (r: dimseRequests.CStoreRequest) => void): Promise<{ status: number; comment?: string }> {
  return new Promise((resolve, reject) => {
    const client = new Client();
    const req = new dimseRequests.CStoreRequest(file);
    edit?.(req);
    let answer: { status: number; comment?: string } | undefined;
    req.on('response', (res: responses.CStoreResponse) => {
      answer = { status: res.getStatus(), comment: res.getErrorComment?.() };
    });
    client.addRequest(req);
    client.on('networkError', (e: Error) => reject(e));
    client.on('associationRejected', () => reject(new Error('association rejected')));
    client.on('closed', () => (answer ? resolve(answer) : reject(new Error('no C-STORE response'))));
    client.send('127.0.0.1', port, callingAE, AE);
  });
}

const PART10_PREFIX_LENGTH = 132;

/** Polls `check` until it holds (at most 10 s). */
async function waitFor(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200 && !(await check()); i++) await new Promise((r) => setTimeout(r, 50));
}

/** An implicit VR little endian element (PS3.5 7.1.3), as a DIMSE command is encoded (PS3.7 6.3.1). */
function commandElement(element: number, value: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt16LE(0x0000, 0);
  head.writeUInt16LE(element, 2);
  head.writeUInt32LE(value.length, 4);
  return Buffer.concat([head, value]);
}
const uid = (text: string) => Buffer.from(text.length % 2 ? `${text}\0` : text, 'latin1');
const us = (n: number) => Buffer.from([n & 0xff, n >> 8]);
const item = (type: number, body: Buffer) => Buffer.concat([Buffer.from([type, 0]), Buffer.from([body.length >> 8, body.length & 0xff]), body]);
const pdu = (type: number, body: Buffer) => {
  const head = Buffer.alloc(6);
  head[0] = type;
  head.writeUInt32BE(body.length, 2);
  return Buffer.concat([head, body]);
};

/**
 * Associates by hand (PS3.8 9.3), sends a C-STORE command and the first `part` of its data set
 * (Explicit VR Little Endian), then drops the connection: what a device does when it loses power.
 */
async function sendPartOfDataSet(port: number, callingAE: string, instance: { sopClassUID: string; sopInstanceUID: string }, part: Buffer): Promise<void> {
  const ae = (t: string) => Buffer.from(t.padEnd(16, ' '), 'latin1');
  const context = Buffer.concat([Buffer.from([1, 0, 0, 0]), item(0x30, Buffer.from(instance.sopClassUID)), item(0x40, Buffer.from('1.2.840.10008.1.2.1'))]);
  const userInfo = item(0x50, Buffer.concat([item(0x51, Buffer.from([0, 0, 0x40, 0])), item(0x52, Buffer.from('2.25.1'))]));
  const fixed = Buffer.concat([Buffer.from([0, 1, 0, 0]), ae(AE), ae(callingAE), Buffer.alloc(32)]);
  const associate = pdu(0x01, Buffer.concat([fixed, item(0x10, Buffer.from('1.2.840.10008.3.1.1.1')), item(0x20, context), userInfo]));
  const body = Buffer.concat([
    commandElement(0x0002, uid(instance.sopClassUID)),
    commandElement(0x0100, us(0x0001)),
    commandElement(0x0110, us(1)),
    commandElement(0x0700, us(0)),
    commandElement(0x0800, us(0x0000)),
    commandElement(0x1000, uid(instance.sopInstanceUID)),
  ]);
  const groupLength = Buffer.alloc(4);
  groupLength.writeUInt32LE(body.length);
  const command = Buffer.concat([commandElement(0x0000, groupLength), body]);
  const pdv = (header: number, data: Buffer) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length + 2);
    return Buffer.concat([length, Buffer.from([1, header]), data]);
  };
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.once('data', (answer: Buffer) => (answer[0] === 0x02 ? resolve() : reject(new Error(`association not accepted (PDU type ${answer[0]})`))));
    socket.write(associate);
  });
  socket.write(pdu(0x04, pdv(0x03, command)));
  // Data set fragments that are not the last (message control header 0), in PDVs of at most 16 kB.
  for (let at = 0; at < part.length; at += 16_000) socket.write(pdu(0x04, pdv(0x00, part.subarray(at, at + 16_000))));
  await new Promise<void>((resolve) => socket.end(() => resolve()));
  socket.destroy();
}

/** Parses a Part 10 file: its meta and data set, naturalized. */
function parse(bytes: Buffer): { meta: Record<string, unknown>; dict: Record<string, unknown> } {
  dcmjs.log.setLevel('silent');
  dcmjs.log.getLogger('validation.dcmjs').setLevel('silent');
  const parsed = dcmjs.data.DicomMessage.readFile(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  const naturalize = dcmjs.data.DicomMetaDictionary.naturalizeDataset;
  return { meta: naturalize(parsed.meta), dict: naturalize(parsed.dict) };
}

/** The pixel data of a parsed data set as one buffer (the fragments of each frame, or the native bytes). */
function pixels(dict: Record<string, unknown>): Buffer {
  const value = dict.PixelData as ArrayBuffer[] | undefined;
  return Buffer.concat((value ?? []).map((b) => Buffer.from(b)));
}

describe('DIMSE C-STORE SCP', () => {
  let t: TestApp;
  let scp: DimseListener;
  let dir: string;
  const auditEvents = async (where: (e: AuditEvent) => boolean): Promise<AuditEvent[]> => {
    const rows = await t.app.db.knex('audit_events').select('resource');
    return rows.map((r: { resource: AuditEvent | string }) => (typeof r.resource === 'string' ? JSON.parse(r.resource) : r.resource)).filter(where);
  };
  const detail = (e: AuditEvent, key: string) => e.entity?.flatMap((x) => x.detail ?? []).find((d) => d.type === key)?.valueString;
  const send = (callingAE: string, files: string[], options: string[] = []) => dcmtk('storescu', ['-v', '-aet', callingAE, '-aec', AE, ...options, '127.0.0.1', String(scp.port), ...files]);
  const instanceCount = async (sop: string) => Number((await t.app.db.knex('instances').where({ sop_instance_uid: sop }).count<{ count: string }[]>('* as count'))[0].count);
  const retrieve = async (study: string, series: string, sop: string, token?: string): Promise<Buffer> => {
    const res = await request(token ? t.app.express : t.http)
      .get(`/dicomweb/studies/${study}/series/${series}/instances/${sop}`)
      .set('Accept', 'application/dicom; transfer-syntax=*')
      .set(token ? { Authorization: `Bearer ${token}` } : {})
      .buffer(true)
      .parse(binaryBody);
    expect(res.status).toBe(200);
    return res.body as Buffer;
  };
  const writeInstance = async (options: Parameters<typeof createSyntheticInstance>[0] = {}) => {
    const instance = createSyntheticInstance({ rows: 16, columns: 16, bitsAllocated: 8, patientID: `PID-${randomUUID().slice(0, 8)}`, ...options });
    const file = path.join(dir, `${instance.sopInstanceUID}.dcm`);
    await fs.writeFile(file, instance.bytes);
    return { ...instance, file };
  };

  beforeAll(async () => {
    t = await startTestApp();
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'il-dimse-'));
    scp = await startAppDimseListener(
      t.app,
      {
        port: 0,
        host: '127.0.0.1',
        aeTitle: AE,
        peers: [
          { aeTitle: 'STORESCU', projects: [], services: ['store'] },
          { aeTitle: 'OCT_DEVICE', projects: [PROJECT], services: ['store'] },
          { aeTitle: 'ELSEWHERE', host: '10.1.2.3', projects: [], services: ['store'] },
        ],
      },
      'http://imaging-lake.test/dicomweb',
    );
  }, 120_000);

  afterAll(async () => {
    await scp?.close();
    await t?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('C-ECHO from a configured peer succeeds; an unknown AE, a peer from another address and a wrong called AE are rejected, and audited', async () => {
    expect(await dcmtk('echoscu', ['-aet', 'STORESCU', '-aec', AE, '127.0.0.1', String(scp.port)])).toMatchObject({ code: 0 });

    const stranger = await dcmtk('echoscu', ['-aet', 'STRANGER', '-aec', AE, '127.0.0.1', String(scp.port)]);
    expect(stranger.code).not.toBe(0);
    expect(stranger.output).toMatch(/Calling AE Title Not Recognized/i);
    const wrongAddress = await dcmtk('echoscu', ['-aet', 'ELSEWHERE', '-aec', AE, '127.0.0.1', String(scp.port)]);
    expect(wrongAddress.output).toMatch(/Calling AE Title Not Recognized/i);
    const wrongCalled = await dcmtk('echoscu', ['-aet', 'STORESCU', '-aec', 'NOT_US', '127.0.0.1', String(scp.port)]);
    expect(wrongCalled.code).not.toBe(0);
    expect(wrongCalled.output).toMatch(/Called AE Title Not Recognized/i);

    const rejections = await auditEvents((e) => e.type.code === '110114' && /DIMSE association rejected/.test(e.outcomeDesc ?? ''));
    expect(rejections.map((e) => detail(e, 'callingAETitle')).sort()).toEqual(['ELSEWHERE', 'STORESCU', 'STRANGER']);
    for (const e of rejections) expect(e.outcome).toBe('4');
    expect(rejections.find((e) => detail(e, 'callingAETitle') === 'ELSEWHERE')!.outcomeDesc).toMatch(/not allowed from 127\.0\.0\.1/);
  });

  // Each file with the storescu option that proposes its transfer syntax: received and stored as sent.
  const files: Array<[string, string[]]> = [
    ['transfer-syntax/pydicom__MR_small.dcm', []],
    ['modalities/nibabel-nicom__0.dcm', ['-xi']],
    ['transfer-syntax/wg04__CT1_JPLL.dcm', ['-xs']],
    ['ophthalmic/dcmjs__sample-op.dcm', ['-xs']],
    ['multiframe/pydicom-data__OBXXXX1A_rle_2frame.dcm', ['-xr']],
    ['transfer-syntax/pydicom__image_dfl.dcm', ['-xd']],
    ['transfer-syntax/pydicom__MR_small_jp2klossless.dcm', ['-xv']],
    ['modalities/wg04__RG2_UNC.dcm', []],
  ];

  test.each(files)('storescu stores %s in the transfer syntax it was sent, served back over DICOMweb with its pixel data', async (name, options) => {
    const original = parse(await fs.readFile(sharedData('dicom', name)));
    const run = await send('STORESCU', [sharedData('dicom', name)], options);
    expect(run.output).toMatch(/Received Store Response \((Success|Warning)/);
    expect(run.code).toBe(0);

    const { StudyInstanceUID: study, SeriesInstanceUID: series, SOPInstanceUID: sop } = original.dict as Record<string, string>;
    const found = await request(t.http).get(`/dicomweb/studies/${study}/instances`).query({ SOPInstanceUID: sop });
    expect(found.status).toBe(200);
    expect(found.body).toHaveLength(1);

    const stored = parse(await retrieve(study, series, sop));
    expect(stored.meta.TransferSyntaxUID).toBe(original.meta.TransferSyntaxUID);
    expect(stored.meta.SourceApplicationEntityTitle).toBe('STORESCU');
    expect(stored.meta.MediaStorageSOPInstanceUID).toBe(sop);
    expect(stored.dict.SOPInstanceUID).toBe(sop);
    expect(stored.dict.PatientName).toEqual(original.dict.PatientName);
    const sent = pixels(original.dict);
    expect(pixels(stored.dict).equals(sent)).toBe(true);
  }, 60_000);

  test('a stored instance is audited in its transaction as DICOM Instances Transferred by the peer AE', async () => {
    const instance = await writeInstance();
    const run = await send('STORESCU', [instance.file]);
    expect(run.output).toMatch(/Received Store Response \(Success\)/);
    const events = await auditEvents((e) => e.type.code === '110104' && e.entity?.some((x) => x.what?.identifier?.value === instance.studyInstanceUID) === true);
    expect(events).toHaveLength(1);
    const [event] = events;
    expect(event).toMatchObject({ action: 'C', outcome: '0', subtype: [{ code: 'create' }] });
    expect(event.agent.find((a) => a.requestor)?.who?.identifier).toEqual({ system: 'urn:dicom:ae-title', value: 'STORESCU' });
    expect(event.agent.find((a) => a.type?.coding[0]?.code === '110153')?.network?.address).toMatch(/127\.0\.0\.1/);
    expect(detail(event, 'service')).toBe('DIMSE C-STORE');
    expect(detail(event, 'sopInstanceUID')).toBe(instance.sopInstanceUID);
  });

  test("what a peer tied to a project stores is that project's: its researchers see it, another project's do not", async () => {
    const instance = await writeInstance({ modality: 'OPT', sopClassUID: '1.2.840.10008.5.1.4.1.1.77.1.5.4' });
    const run = await send('OCT_DEVICE', [instance.file]);
    expect(run.output).toMatch(/Received Store Response \(Success\)/);

    const own = await t.token('researcher', [PROJECT]);
    const other = await t.token('researcher', [OTHER_PROJECT]);
    const asOwn = await request(t.app.express).get('/dicomweb/studies').query({ PatientID: '*', limit: 1000 }).set('Authorization', `Bearer ${own}`);
    expect(asOwn.status).toBe(200);
    expect(asOwn.body).toHaveLength(1);
    // The researcher's view is de-identified: neither the patient id nor the study UID is shown as stored.
    expect(JSON.stringify(asOwn.body)).not.toContain(instance.studyInstanceUID);
    const asOther = await request(t.app.express).get('/dicomweb/studies').query({ PatientID: '*' }).set('Authorization', `Bearer ${other}`);
    expect(asOther.status).toBe(200);
    expect(asOther.body).toEqual([]);

    const [event] = await auditEvents((e) => e.type.code === '110104' && e.entity?.some((x) => x.what?.identifier?.value === instance.studyInstanceUID) === true);
    expect(event.entity?.find((x) => x.what?.identifier?.system === 'urn:imaging-lake:project')?.what?.identifier?.value).toBe(PROJECT);
  });

  test("an instance of a study another project holds is refused (0124H, Not Authorized) and not kept", async () => {
    const first = createSyntheticInstance({ rows: 8, columns: 8, bitsAllocated: 8 });
    const dm = await t.token('data-manager', [OTHER_PROJECT]);
    const { body, contentType } = buildMultipart([first.bytes]);
    const stow = await request(t.app.express).post('/dicomweb/studies').set('Authorization', `Bearer ${dm}`).set('Content-Type', contentType).send(body);
    expect(stow.status).toBe(200);

    const second = await writeInstance({ studyInstanceUID: first.studyInstanceUID });
    const answer = await cStore(scp.port, 'OCT_DEVICE', second.file);
    expect(answer.status).toBe(0x0124);
    expect(await instanceCount(second.sopInstanceUID)).toBe(0);
    const refusals = await auditEvents((e) => e.type.code === '110104' && detail(e, 'sopInstanceUID') === second.sopInstanceUID);
    expect(refusals).toHaveLength(1);
    expect(refusals[0].outcome).toBe('4');
  });

  test('a data set that is not the instance the command announced is refused (A900H) and not kept', async () => {
    const instance = await writeInstance();
    const answer = await cStore(scp.port, 'STORESCU', instance.file, (r) => r.setAffectedSopInstanceUid('2.25.1234567890'));
    expect(answer.status).toBe(0xa900);
    expect(answer.comment ?? '').toMatch(/SOPInstanceUID/);
    expect(await instanceCount(instance.sopInstanceUID)).toBe(0);
  });

  test('an instance the archive cannot keep gets a failure status, and the association goes on to store the next one', async () => {
    // No Study Instance UID (dcmodify erases it): storescu sends it, the store refuses it (A900H).
    const broken = await writeInstance();
    expect(await dcmtk('dcmodify', ['-nb', '-ea', '(0020,000d)', broken.file])).toMatchObject({ code: 0 });
    const next = await writeInstance();
    const run = await send('STORESCU', [broken.file, next.file], ['--no-halt']);
    expect(run.output).toMatch(/Received Store Response \(Error: 0xa900|Received Store Response \(.*DataSetDoesNotMatchSOPClass/i);
    expect(run.output).toMatch(/Received Store Response \(Success\)/);
    expect(await instanceCount(broken.sopInstanceUID)).toBe(0);
    expect(await instanceCount(next.sopInstanceUID)).toBe(1);
  });

  test('a data set cut off by a lost connection is not kept, and the failure is audited', async () => {
    const instance = createSyntheticInstance({ rows: 256, columns: 256, bitsAllocated: 16 });
    const dataSet = instance.bytes.subarray(PART10_PREFIX_LENGTH + 12 + instance.bytes.readUInt32LE(PART10_PREFIX_LENGTH + 8));
    await sendPartOfDataSet(scp.port, 'STORESCU', instance, dataSet.subarray(0, dataSet.length >> 1));
    await waitFor(async () => (await auditEvents((e) => detail(e, 'sopInstanceUID') === instance.sopInstanceUID)).length > 0);
    const [event] = await auditEvents((e) => detail(e, 'sopInstanceUID') === instance.sopInstanceUID);
    expect(event.outcome).not.toBe('0');
    expect(event.outcomeDesc).toMatch(/not received completely/);
    expect(await instanceCount(instance.sopInstanceUID)).toBe(0);
  });

  test('with the audit trail unavailable a C-STORE is refused (A700H, out of resources) and nothing is kept', async () => {
    const instance = await writeInstance();
    await t.app.db.knex.raw('ALTER TABLE audit_events RENAME TO audit_events_offline');
    try {
      const answer = await cStore(scp.port, 'STORESCU', instance.file);
      expect(answer.status).toBe(0xa700);
    } finally {
      await t.app.db.knex.raw('ALTER TABLE audit_events_offline RENAME TO audit_events');
    }
    expect(await instanceCount(instance.sopInstanceUID)).toBe(0);
  });
});
