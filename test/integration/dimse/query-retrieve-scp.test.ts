/**
 * DIMSE Query/Retrieve (src/dimse): dcmtk's findscu, getscu and movescu against the listener,
 * storescp as a C-MOVE destination, and dcmjs-dimse's Client for identifiers dcmtk will not send.
 * Instances are loaded with storescu; what comes back is compared with what was sent.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Client, Dataset, Server, requests as dimseRequests, responses as dimseResponses, type responses } from 'dcmjs-dimse';
import request from 'supertest';
import type { AuditEvent } from '../../../src/audit/audit-event';
import { startAppDimseListener, type DimseListener } from '../../../src/dimse/dimse-listener';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { dcmtk } from '../../helpers/dcmtk';
import { buildMultipart } from '../../helpers/multipart-body';
import { AcceptingScp, freePort, listening } from '../../helpers/dimse-peer';
import { sharedData, startTestApp, type TestApp } from '../../helpers/test-app';

// dcmjs ships no type declarations.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const dcmjs = require('dcmjs');

const AE = 'IMAGING_LAKE';
const PROJECT = `qr-${randomUUID().slice(0, 8)}`;
const JPEG_LOSSLESS_FILE = 'transfer-syntax/wg04__CT1_JPLL.dcm';
const EXPLICIT_LE = '1.2.840.10008.1.2.1';

function parse(bytes: Buffer): { meta: Record<string, unknown>; dict: Record<string, unknown> } {
  const data = dcmjs.data.DicomMessage.readFile(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  return {
    meta: dcmjs.data.DicomMetaDictionary.naturalizeDataset(data.meta),
    dict: dcmjs.data.DicomMetaDictionary.naturalizeDataset(data.dict),
  };
}

/** The data sets of the files in a directory (findscu -X writes one per response; getscu and storescp one per instance). */
async function readDir(dir: string): Promise<Array<{ meta: Record<string, unknown>; dict: Record<string, unknown> }>> {
  const names = (await fs.readdir(dir)).sort();
  return Promise.all(names.map(async (n) => parse(await fs.readFile(path.join(dir, n)))));
}

/** A C-FIND through dcmjs-dimse with an identifier given as dcmjs naturalized elements; resolves with every response. */
function cFind(port: number, callingAE: string, elements: Record<string, unknown>): Promise<responses.CFindResponse[]> {
  return new Promise((resolve, reject) => {
    const client = new Client();
    const req = new dimseRequests.CFindRequest();
    req.setAffectedSopClassUid('1.2.840.10008.5.1.4.1.2.2.1');
    req.setDataset(new Dataset(elements));
    const got: responses.CFindResponse[] = [];
    req.on('response', (r: responses.CFindResponse) => got.push(r));
    client.addRequest(req);
    client.on('networkError', reject);
    client.on('closed', () => resolve(got));
    client.send('127.0.0.1', port, callingAE, AE);
  });
}

describe('DIMSE Query/Retrieve SCP (C-FIND, C-GET, C-MOVE)', () => {
  let t: TestApp;
  let scp: DimseListener;
  let dir: string;
  let destPort: number;
  let flakyPort: number;
  let storescp: ChildProcess | undefined;
  const patientID = `QR-${randomUUID().slice(0, 8)}`;
  const study = newUid();
  const seriesA = newUid();
  const seriesB = newUid();
  const sent: Array<{ sopInstanceUID: string; seriesInstanceUID: string; bytes: Buffer }> = [];
  const projectStudy = newUid();
  const jpeg = { study: '', sop: '' };

  const auditEvents = async (match: (e: AuditEvent) => boolean): Promise<AuditEvent[]> => {
    const rows = await t.app.db.knex('audit_events').select('resource');
    return rows.map((r: { resource: unknown }) => (typeof r.resource === 'string' ? JSON.parse(r.resource) : r.resource) as AuditEvent).filter(match);
  };
  const detail = (e: AuditEvent, key: string) => e.entity?.flatMap((x) => x.detail ?? []).find((d) => d.type === key)?.valueString;
  const port = () => String(scp.port);
  const outDir = () => fs.mkdtemp(path.join(dir, 'out-'));
  const find = async (callingAE: string, args: string[]) => {
    const out = await outDir();
    const run = await dcmtk('findscu', ['-v', '-aet', callingAE, '-aec', AE, '-X', '-od', out, ...args, '127.0.0.1', port()]);
    return { run, results: await readDir(out) };
  };

  beforeAll(async () => {
    t = await startTestApp();
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'il-qr-'));
    destPort = await freePort();
    flakyPort = await freePort();
    scp = await startAppDimseListener(
      t.app,
      {
        port: 0,
        host: '127.0.0.1',
        aeTitle: AE,
        peers: [
          { aeTitle: 'LOADER', projects: [], services: ['store'] },
          { aeTitle: 'PROJ_LOADER', projects: [PROJECT], services: ['store'] },
          { aeTitle: 'WORKSTATION', projects: [], services: ['find', 'get', 'move'] },
          { aeTitle: 'PROJ_VIEWER', projects: [PROJECT], services: ['find', 'get'] },
          { aeTitle: 'DEST', host: '127.0.0.1', port: destPort, projects: [], services: [] },
          { aeTitle: 'NOWHERE', host: '127.0.0.1', port: 9, projects: [], services: [] },
          { aeTitle: 'FLAKY', host: '127.0.0.1', port: flakyPort, projects: [], services: [] },
        ],
      },
      'http://imaging-lake.test/dicomweb',
    );

    // One patient, one study of two series (three instances), loaded over C-STORE.
    const files: string[] = [];
    for (const [series, n] of [
      [seriesA, 1],
      [seriesA, 2],
      [seriesB, 1],
    ] as const) {
      const instance = createSyntheticInstance({
        studyInstanceUID: study,
        seriesInstanceUID: series,
        seriesNumber: series === seriesA ? 1 : 2,
        instanceNumber: n,
        modality: series === seriesA ? 'OPT' : 'OP',
        patientID,
        patientName: 'QUERY^RETRIEVE',
        studyDate: '20240315',
        rows: 16,
        columns: 16,
        bitsAllocated: 8,
        seed: n + (series === seriesA ? 0 : 10),
      });
      const file = path.join(dir, `${instance.sopInstanceUID}.dcm`);
      await fs.writeFile(file, instance.bytes);
      files.push(file);
      sent.push({ sopInstanceUID: instance.sopInstanceUID, seriesInstanceUID: series, bytes: instance.bytes });
    }
    const load = await dcmtk('storescu', ['-aet', 'LOADER', '-aec', AE, '127.0.0.1', port(), ...files]);
    expect(load.code).toBe(0);
    const projectFile = path.join(dir, 'project.dcm');
    await fs.writeFile(projectFile, createSyntheticInstance({ studyInstanceUID: projectStudy, patientID: `${patientID}-P`, patientName: 'QUERY^PROJECT', rows: 8, columns: 8, bitsAllocated: 8 }).bytes);
    expect((await dcmtk('storescu', ['-aet', 'PROJ_LOADER', '-aec', AE, '127.0.0.1', port(), projectFile])).code).toBe(0);
    // A JPEG Lossless instance, stored as sent.
    const jpegRun = await dcmtk('storescu', ['-xs', '-aet', 'LOADER', '-aec', AE, '127.0.0.1', port(), sharedData('dicom', JPEG_LOSSLESS_FILE)]);
    expect(jpegRun.code).toBe(0);
    const original = parse(await fs.readFile(sharedData('dicom', JPEG_LOSSLESS_FILE)));
    jpeg.study = String(original.dict.StudyInstanceUID);
    jpeg.sop = String(original.dict.SOPInstanceUID);
  }, 120_000);

  afterAll(async () => {
    storescp?.kill();
    await scp?.close();
    await t?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('C-FIND at the STUDY level (Study Root) matches on PatientID and returns the keys asked for, empty where there is no value', async () => {
    const { run, results } = await find('WORKSTATION', [
      '-S',
      '-k', 'QueryRetrieveLevel=STUDY',
      '-k', `PatientID=${patientID}`,
      '-k', 'PatientName',
      '-k', 'StudyInstanceUID',
      '-k', 'StudyDate',
      '-k', 'ModalitiesInStudy',
      '-k', 'NumberOfStudyRelatedInstances',
      '-k', 'ReferringPhysicianName',
    ]);
    expect(run.code).toBe(0);
    expect(results).toHaveLength(1);
    const [r] = results.map((x) => x.dict);
    expect(r.QueryRetrieveLevel).toBe('STUDY');
    expect(r.StudyInstanceUID).toBe(study);
    expect(r.PatientID).toBe(patientID);
    expect(r.PatientName).toEqual([{ Alphabetic: 'QUERY^RETRIEVE' }]);
    expect(r.StudyDate).toBe('20240315');
    expect([r.ModalitiesInStudy].flat().sort()).toEqual(['OP', 'OPT']);
    expect(Number(r.NumberOfStudyRelatedInstances)).toBe(3);
    expect(r.RetrieveAETitle).toBe(AE);
    // Asked for, no value: present and empty (PS3.4 C.4.1.1.3.2).
    expect(Object.keys(r)).toContain('ReferringPhysicianName');
    // Not asked for: absent.
    expect(r.AccessionNumber).toBeUndefined();
    expect(r.SOPInstanceUID).toBeUndefined();
  });

  test('C-FIND matches wildcards and date ranges as QIDO-RS does, and finds nothing for a non-matching key', async () => {
    const wildcard = await find('WORKSTATION', ['-S', '-k', 'QueryRetrieveLevel=STUDY', '-k', 'PatientName=QUERY^RETR*', '-k', 'StudyDate=20240301-20240331', '-k', 'StudyInstanceUID']);
    expect(wildcard.results.map((r) => r.dict.StudyInstanceUID)).toEqual([study]);
    const none = await find('WORKSTATION', ['-S', '-k', 'QueryRetrieveLevel=STUDY', '-k', 'PatientName=QUERY^RETR*', '-k', 'StudyDate=20250101-', '-k', 'StudyInstanceUID']);
    expect(none.run.code).toBe(0);
    expect(none.results).toHaveLength(0);
  });

  test('C-FIND at the SERIES and IMAGE levels, under the study (and series) asked for', async () => {
    const series = await find('WORKSTATION', ['-S', '-k', 'QueryRetrieveLevel=SERIES', '-k', `StudyInstanceUID=${study}`, '-k', 'SeriesInstanceUID', '-k', 'Modality', '-k', 'NumberOfSeriesRelatedInstances']);
    const bySeries = Object.fromEntries(series.results.map((r) => [r.dict.SeriesInstanceUID, r.dict]));
    expect(Object.keys(bySeries).sort()).toEqual([seriesA, seriesB].sort());
    expect(bySeries[seriesA]).toMatchObject({ QueryRetrieveLevel: 'SERIES', Modality: 'OPT' });
    expect(Number(bySeries[seriesA].NumberOfSeriesRelatedInstances)).toBe(2);

    const images = await find('WORKSTATION', ['-S', '-k', 'QueryRetrieveLevel=IMAGE', '-k', `StudyInstanceUID=${study}`, '-k', `SeriesInstanceUID=${seriesA}`, '-k', 'SOPInstanceUID', '-k', 'InstanceNumber']);
    expect(images.results.map((r) => r.dict.SOPInstanceUID).sort()).toEqual(sent.filter((s) => s.seriesInstanceUID === seriesA).map((s) => s.sopInstanceUID).sort());
    expect(images.results.every((r) => r.dict.QueryRetrieveLevel === 'IMAGE')).toBe(true);
  });

  test('C-FIND at the PATIENT level (Patient Root) answers once per patient, with Number of Patient Related Studies', async () => {
    const { run, results } = await find('WORKSTATION', ['-P', '-k', 'QueryRetrieveLevel=PATIENT', '-k', `PatientID=${patientID}*`, '-k', 'PatientName', '-k', 'NumberOfPatientRelatedStudies']);
    expect(run.code).toBe(0);
    const byId = Object.fromEntries(results.map((r) => [r.dict.PatientID, r.dict]));
    expect(Object.keys(byId).sort()).toEqual([patientID, `${patientID}-P`]);
    expect(byId[patientID]).toMatchObject({ QueryRetrieveLevel: 'PATIENT', PatientName: [{ Alphabetic: 'QUERY^RETRIEVE' }] });
    expect(Number(byId[patientID].NumberOfPatientRelatedStudies)).toBe(1);
  });

  test('a peer tied to a project finds only its studies; a peer without the service cannot query at all', async () => {
    const tied = await find('PROJ_VIEWER', ['-S', '-k', 'QueryRetrieveLevel=STUDY', '-k', `PatientID=${patientID}*`, '-k', 'StudyInstanceUID']);
    expect(tied.run.code).toBe(0);
    expect(tied.results.map((r) => r.dict.StudyInstanceUID)).toEqual([projectStudy]);

    const storeOnly = await find('LOADER', ['-S', '-k', 'QueryRetrieveLevel=STUDY', '-k', 'StudyInstanceUID']);
    expect(storeOnly.run.code).not.toBe(0);
    expect(storeOnly.run.output).toMatch(/No Acceptable Presentation Contexts|No presentation context/i);
    expect(storeOnly.results).toHaveLength(0);
  });

  test('every C-FIND is audited as a Query (110112) with the query, before any answer', async () => {
    const marker = `AUDIT-${randomUUID().slice(0, 8)}`;
    await find('WORKSTATION', ['-S', '-k', 'QueryRetrieveLevel=STUDY', '-k', `PatientID=${marker}`]);
    const queryOf = (e: AuditEvent) => Buffer.from(String(e.entity?.find((x) => x.query)?.query ?? ''), 'base64').toString();
    const events = await auditEvents((e) => e.type.code === '110112' && detail(e, 'service') === 'DIMSE C-FIND' && queryOf(e).includes(marker));
    expect(events).toHaveLength(1);
    const [event] = events;
    expect(event.outcome).toBe('0');
    expect(event.agent.find((a) => a.requestor)?.who?.identifier).toEqual({ system: 'urn:dicom:ae-title', value: 'WORKSTATION' });
    expect(queryOf(event)).toBe(`STUDY?00100020=${marker}`);
  });

  test('C-FIND refuses an identifier without a Query/Retrieve Level (A900) and a malformed match value (C000)', async () => {
    const noLevel = await cFind(scp.port, 'WORKSTATION', { PatientID: patientID, StudyInstanceUID: '' });
    expect(noLevel.map((r) => r.getStatus())).toEqual([0xa900]);
    const badDate = await cFind(scp.port, 'WORKSTATION', { QueryRetrieveLevel: 'STUDY', StudyDate: '2024XX01', StudyInstanceUID: '' });
    expect(badDate.map((r) => r.getStatus())).toEqual([0xc000]);
    expect(badDate[0].getErrorComment()).toMatch(/StudyDate/);
  });

  test('C-GET of a study sends every instance back on the association, byte for byte in its stored syntax', async () => {
    const out = await outDir();
    const run = await dcmtk('getscu', ['-v', '-S', '-aet', 'WORKSTATION', '-aec', AE, '-od', out, '-k', 'QueryRetrieveLevel=STUDY', '-k', `StudyInstanceUID=${study}`, '127.0.0.1', port()]);
    expect(run.code).toBe(0);
    expect(run.output).toMatch(/Completed Suboperations\s*:\s*3/);
    const received = await readDir(out);
    expect(received.map((r) => r.dict.SOPInstanceUID).sort()).toEqual(sent.map((s) => s.sopInstanceUID).sort());
    for (const r of received) {
      const original = parse(sent.find((s) => s.sopInstanceUID === r.dict.SOPInstanceUID)!.bytes);
      expect(r.meta.TransferSyntaxUID).toBe(EXPLICIT_LE);
      expect(r.dict.PatientID).toBe(patientID);
      expect(Buffer.from((r.dict.PixelData as ArrayBuffer[])[0]).equals(Buffer.from((original.dict.PixelData as ArrayBuffer[])[0]))).toBe(true);
    }
    const events = await auditEvents((e) => e.type.code === '110104' && e.action === 'R' && detail(e, 'service') === 'DIMSE C-GET' && e.entity?.some((x) => x.what?.identifier?.value === study) === true);
    expect(events).toHaveLength(1);
    expect(detail(events[0], 'instances')).toBe('3');
  });

  test('C-GET of a JPEG Lossless instance: as stored when the requester accepts it, transcoded to Explicit VR Little Endian when it accepts only uncompressed', async () => {
    const asStored = await outDir();
    const a = await dcmtk('getscu', ['-S', '+xs', '-aet', 'WORKSTATION', '-aec', AE, '-od', asStored, '-k', 'QueryRetrieveLevel=STUDY', '-k', `StudyInstanceUID=${jpeg.study}`, '127.0.0.1', port()]);
    expect(a.code).toBe(0);
    const [stored] = await readDir(asStored);
    const original = parse(await fs.readFile(sharedData('dicom', JPEG_LOSSLESS_FILE)));
    expect(stored.meta.TransferSyntaxUID).toBe(original.meta.TransferSyntaxUID);
    expect(stored.dict.SOPInstanceUID).toBe(jpeg.sop);

    const uncompressed = await outDir();
    const b = await dcmtk('getscu', ['-S', '-aet', 'WORKSTATION', '-aec', AE, '-od', uncompressed, '-k', 'QueryRetrieveLevel=STUDY', '-k', `StudyInstanceUID=${jpeg.study}`, '127.0.0.1', port()]);
    expect(b.code).toBe(0);
    const [transcoded] = await readDir(uncompressed);
    expect(transcoded.meta.TransferSyntaxUID).toBe(EXPLICIT_LE);
    expect(transcoded.dict.SOPInstanceUID).toBe(jpeg.sop);
    const rows = Number(original.dict.Rows);
    const columns = Number(original.dict.Columns);
    expect((transcoded.dict.PixelData as ArrayBuffer[])[0].byteLength).toBe(rows * columns * (Number(original.dict.BitsAllocated) / 8));
  });

  test('C-GET by a project-tied peer retrieves nothing outside its projects; a SERIES level get without a Series Instance UID is refused', async () => {
    const out = await outDir();
    const run = await dcmtk('getscu', ['-v', '-S', '-aet', 'PROJ_VIEWER', '-aec', AE, '-od', out, '-k', 'QueryRetrieveLevel=STUDY', '-k', `StudyInstanceUID=${study}`, '127.0.0.1', port()]);
    expect(run.code).toBe(0);
    expect(await fs.readdir(out)).toHaveLength(0);
    const own = await outDir();
    await dcmtk('getscu', ['-S', '-aet', 'PROJ_VIEWER', '-aec', AE, '-od', own, '-k', 'QueryRetrieveLevel=STUDY', '-k', `StudyInstanceUID=${projectStudy}`, '127.0.0.1', port()]);
    expect(await fs.readdir(own)).toHaveLength(1);

    const refused = await dcmtk('getscu', ['-v', '-S', '-aet', 'WORKSTATION', '-aec', AE, '-od', out, '-k', 'QueryRetrieveLevel=SERIES', '-k', `StudyInstanceUID=${study}`, '127.0.0.1', port()]);
    expect(refused.output).toMatch(/DataSetDoesNotMatchSOPClass/i);
  });

  /** storescp as the move destination DEST, started once: the directory it writes into and what it logged. */
  let destination: { received: string; log: () => string } | undefined;
  const startDestination = async () => {
    if (destination) return destination;
    const received = await outDir();
    storescp = spawn('storescp', ['-d', '-aet', 'DEST', '-od', received, String(destPort)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let destLog = '';
    storescp.stdout!.on('data', (c: Buffer) => (destLog += c.toString()));
    storescp.stderr!.on('data', (c: Buffer) => (destLog += c.toString()));
    await listening(destPort);
    destination = { received, log: () => destLog };
    return destination;
  };

  test('C-MOVE sends a series to a configured destination (storescp), naming the move originator; an unknown or unreachable destination fails', async () => {
    const { received, log } = await startDestination();
    const run = await dcmtk('movescu', ['-v', '-S', '-aet', 'WORKSTATION', '-aec', AE, '-aem', 'DEST', '-k', 'QueryRetrieveLevel=SERIES', '-k', `StudyInstanceUID=${study}`, '-k', `SeriesInstanceUID=${seriesA}`, '127.0.0.1', port()]);
    expect(run.code).toBe(0);
    expect(run.output).toMatch(/Received Final Move Response \(Success\)/);
    const files = (await readDir(received)).filter((f) => f.dict.StudyInstanceUID === study);
    expect(files.map((f) => f.dict.SOPInstanceUID).sort()).toEqual(sent.filter((s) => s.seriesInstanceUID === seriesA).map((s) => s.sopInstanceUID).sort());
    expect(files.every((f) => f.dict.PatientID === patientID)).toBe(true);
    // Each sub-operation names the requester and its C-MOVE (PS3.7 9.1.1.1, Move Originator).
    expect(log()).toMatch(/Move Originator AE Title\s*:\s*WORKSTATION/);

    const unknown = await dcmtk('movescu', ['-v', '-S', '-aet', 'WORKSTATION', '-aec', AE, '-aem', 'NOBODY', '-k', 'QueryRetrieveLevel=STUDY', '-k', `StudyInstanceUID=${study}`, '127.0.0.1', port()]);
    expect(unknown.output).toMatch(/Final Move Response \(Refused: MoveDestinationUnknown\)/);
    const unreachable = await dcmtk('movescu', ['-v', '-S', '-aet', 'WORKSTATION', '-aec', AE, '-aem', 'NOWHERE', '-k', 'QueryRetrieveLevel=STUDY', '-k', `StudyInstanceUID=${study}`, '127.0.0.1', port()]);
    expect(unreachable.output).toMatch(/Final Move Response \(Refused: OutOfResourcesSubOperations\)/);

    const events = await auditEvents((e) => e.type.code === '110104' && detail(e, 'service') === 'DIMSE C-MOVE' && detail(e, 'moveDestination') === 'DEST');
    expect(events).toHaveLength(1);
    expect(events[0].outcome).toBe('0');
  });

  test('C-MOVE to a destination that drops the association after one instance: the rest are counted failed (B000)', async () => {
    // A destination that accepts everything, acknowledges the first C-STORE and then cuts the connection.
    let stored = 0;
    class Flaky extends AcceptingScp {
      override cStoreRequest(request: dimseRequests.CStoreRequest, respond: (r: responses.CStoreResponse) => void): void {
        stored++;
        if (stored > 1) {
          (this as unknown as { socket: net.Socket }).socket.destroy();
          return;
        }
        const r = dimseResponses.CStoreResponse.fromRequest(request);
        r.setStatus(0);
        respond(r);
      }
    }
    const server = new Server(Flaky);
    server.listen(flakyPort);
    try {
      const run = await dcmtk('movescu', ['-v', '-S', '-aet', 'WORKSTATION', '-aec', AE, '-aem', 'FLAKY', '-k', 'QueryRetrieveLevel=STUDY', '-k', `StudyInstanceUID=${study}`, '127.0.0.1', port()]);
      expect(run.output).toMatch(/Received Final Move Response \(Warning: SubOperationsCompleteOneOrMoreFailures\)/);
      expect(stored).toBe(2);
    } finally {
      server.close();
    }
  });

  test('a peer may not C-MOVE without the service: the context is refused', async () => {
    const run = await dcmtk('movescu', ['-v', '-S', '-aet', 'PROJ_VIEWER', '-aec', AE, '-aem', 'DEST', '-k', 'QueryRetrieveLevel=STUDY', '-k', `StudyInstanceUID=${projectStudy}`, '127.0.0.1', port()]);
    // The Move context was refused at association: movescu finds no context to send on.
    expect(run.output).toMatch(/No valid Presentation Context/i);
    expect(run.output).not.toMatch(/Move Response/);
  });

  describe('C-CANCEL (PS3.7 9.3.2.3)', () => {
    // Enough matches that the listener is still answering when the cancel arrives: it looks for one
    // every 64 responses of a C-FIND and before every sub-operation of a C-MOVE.
    const FIND_MATCHES = 2000;
    const MOVE_INSTANCES = 40;
    const cancelStudy = newUid();
    const findSeries = newUid();
    const moveSeries = newUid();

    beforeAll(async () => {
      const files: Buffer[] = [];
      for (const [series, count] of [
        [findSeries, FIND_MATCHES],
        [moveSeries, MOVE_INSTANCES],
      ] as const) {
        for (let n = 1; n <= count; n++) {
          files.push(
            createSyntheticInstance({ studyInstanceUID: cancelStudy, seriesInstanceUID: series, instanceNumber: n, patientID: `${patientID}-C`, patientName: 'QUERY^CANCEL', rows: 8, columns: 8, bitsAllocated: 8, seed: n }).bytes,
          );
        }
      }
      // In requests of 100: one STOW of 2,040 parts would hold as many blob writes open at once.
      for (let i = 0; i < files.length; i += 100) {
        const { body, contentType } = buildMultipart(files.slice(i, i + 100));
        const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).send(body);
        expect(res.status).toBe(200);
      }
    }, 180_000);

    // The cancel races the listener's answers: on a machine busy enough to hold the requester back
    // until every answer is out, the operation ends before the cancel arrives. Up to three tries;
    // a listener that ignores C-CANCEL fails all three.
    const TRIES = 3;

    test('a C-FIND cancelled after its first match ends with FE00 and no more matches', async () => {
      let outcome: Awaited<ReturnType<typeof find>> | undefined;
      for (let i = 0; i < TRIES && !/Final Find Response \(Cancel/.test(outcome?.run.output ?? ''); i++) {
        outcome = await find('WORKSTATION', ['--cancel', '1', '-S', '-k', 'QueryRetrieveLevel=IMAGE', '-k', `StudyInstanceUID=${cancelStudy}`, '-k', `SeriesInstanceUID=${findSeries}`, '-k', 'SOPInstanceUID']);
      }
      const { run, results } = outcome!;
      expect(run.output).toMatch(/Sending Cancel Request/i);
      expect(run.output).toMatch(/Received Final Find Response \(Cancel/);
      expect(results.length).toBeGreaterThanOrEqual(1);
      expect(results.length).toBeLessThan(FIND_MATCHES);
      // The listener takes the next query on the same port as before.
      const after = await find('WORKSTATION', ['-S', '-k', 'QueryRetrieveLevel=SERIES', '-k', `StudyInstanceUID=${cancelStudy}`, '-k', 'SeriesInstanceUID', '-k', 'NumberOfSeriesRelatedInstances']);
      expect(after.results.map((r) => Number(r.dict.NumberOfSeriesRelatedInstances)).sort((a, b) => a - b)).toEqual([MOVE_INSTANCES, FIND_MATCHES]);
    });

    test('a C-MOVE cancelled after its first sub-operation stops sending and ends with FE00', async () => {
      const { received } = await startDestination();
      let run: Awaited<ReturnType<typeof dcmtk>> | undefined;
      for (let i = 0; i < TRIES && !/Final Move Response \(Cancel/.test(run?.output ?? ''); i++) {
        run = await dcmtk('movescu', ['-v', '--cancel', '1', '-S', '-aet', 'WORKSTATION', '-aec', AE, '-aem', 'DEST', '-k', 'QueryRetrieveLevel=SERIES', '-k', `StudyInstanceUID=${cancelStudy}`, '-k', `SeriesInstanceUID=${moveSeries}`, '127.0.0.1', port()]);
      }
      expect(run!.output).toMatch(/Sending Cancel Request/i);
      expect(run!.output).toMatch(/Received Final Move Response \(Cancel/);
      // One pending response per sub-operation done: the cancelled move stopped short of the series.
      const pending = run!.output.match(/Received Move Response \d+ \(Pending\)/g) ?? [];
      expect(pending.length).toBeGreaterThanOrEqual(1);
      expect(pending.length).toBeLessThan(MOVE_INSTANCES - 1);
      expect((await readDir(received)).some((f) => f.dict.SeriesInstanceUID === moveSeries)).toBe(true);
    });
  });
});
