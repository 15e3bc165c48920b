/**
 * DICOM over TLS (src/dimse/dimse-tls.ts, PS3.15 B.9): dcmtk's echoscu and storescu (and dcmjs-dimse's Client for a C-MOVE) with
 * certificates made here by openssl (a test CA, the listener's certificate, a device's, and a
 * stranger's self-signed one), against the listener with DIMSE_TLS_CERT, DIMSE_TLS_KEY and
 * DIMSE_TLS_CA; storescp over TLS and over plain TCP as C-MOVE destinations.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Client, requests as dimseRequests, type responses } from 'dcmjs-dimse';
import request from 'supertest';
import type { AuditEvent } from '../../../src/audit/audit-event';
import { loadConfig } from '../../../src/config';
import { startAppDimseListener, type DimseListener } from '../../../src/dimse/dimse-listener';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { dcmtk } from '../../helpers/dcmtk';
import { freePort, listening } from '../../helpers/dimse-peer';
import { startTestApp, type TestApp } from '../../helpers/test-app';

const run = promisify(execFile);
const AE = 'IMAGING_LAKE';

/** Makes an RSA key and a certificate for `cn` in `dir`: signed by the CA when given, else self-signed. */
async function certificate(dir: string, name: string, cn: string, ca?: { crt: string; key: string }): Promise<{ crt: string; key: string }> {
  const key = path.join(dir, `${name}.key`);
  const crt = path.join(dir, `${name}.crt`);
  if (!ca) {
    await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', crt, '-days', '2', '-subj', `/CN=${cn}`]);
    return { crt, key };
  }
  const csr = path.join(dir, `${name}.csr`);
  const ext = path.join(dir, `${name}.ext`);
  await fs.writeFile(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  await run('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${cn}`]);
  await run('openssl', ['x509', '-req', '-in', csr, '-CA', ca.crt, '-CAkey', ca.key, '-CAcreateserial', '-out', crt, '-days', '2', '-extfile', ext]);
  return { crt, key };
}

/** A C-MOVE of a series over TLS with dcmjs-dimse (dcmtk's movescu has no TLS); resolves with the final status. */
function cMoveOverTls(port: number, callingAE: string, destination: string, study: string, series: string, who: { crt: string; key: string }, ca: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const client = new Client();
    const req = dimseRequests.CMoveRequest.createSeriesMoveRequest(destination, study, series);
    let status: number | undefined;
    req.on('response', (r: responses.CMoveResponse) => {
      if (r.getStatus() !== 0xff00) status = r.getStatus();
    });
    client.addRequest(req);
    client.on('networkError', reject);
    client.on('closed', () => (status === undefined ? reject(new Error('no final C-MOVE response')) : resolve(status)));
    Promise.all([fs.readFile(who.key), fs.readFile(who.crt), fs.readFile(ca)]).then(
      ([key, cert, caCert]) => client.send('127.0.0.1', port, callingAE, AE, { securityOptions: { key, cert, ca: caCert } }),
      reject,
    );
  });
}

describe('DIMSE over TLS (DIMSE_TLS_CERT, DIMSE_TLS_KEY, DIMSE_TLS_CA)', () => {
  let t: TestApp;
  let scp: DimseListener;
  let dir: string;
  let ca: { crt: string; key: string };
  let server: { crt: string; key: string };
  let device: { crt: string; key: string };
  let stranger: { crt: string; key: string };
  let tlsDestPort: number;
  let plainDestPort: number;
  const destinations: ChildProcess[] = [];
  const study = newUid();
  const series = newUid();
  const patientID = `TLS-${randomUUID().slice(0, 8)}`;
  const files: string[] = [];

  const port = () => String(scp.port);
  /** dcmtk's TLS options for a peer with this certificate, trusting the test CA. */
  const tlsArgs = (who: { crt: string; key: string }) => ['+tls', who.key, who.crt, '+cf', ca.crt];
  const stored = async (sop: string) => (await t.app.db.knex('instances').where({ sop_instance_uid: sop }).count<{ n: string }[]>({ n: '*' }))[0]!.n;

  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'il-dimse-tls-'));
    ca = await certificate(dir, 'ca', 'imaging-lake test CA');
    server = await certificate(dir, 'server', 'imaging-lake', ca);
    device = await certificate(dir, 'device', 'OCT_1', ca);
    stranger = await certificate(dir, 'stranger', 'OCT_1');
    t = await startTestApp();
    tlsDestPort = await freePort();
    plainDestPort = await freePort();
    const config = loadConfig({
      ...process.env,
      DIMSE_PORT: '0',
      DIMSE_HOST: '127.0.0.1',
      DIMSE_TLS_CERT: server.crt,
      DIMSE_TLS_KEY: server.key,
      DIMSE_TLS_CA: ca.crt,
      DIMSE_PEERS: JSON.stringify([
        { aeTitle: 'OCT_1', projects: [], services: ['store', 'find', 'move'] },
        // A destination over TLS (as the listener), and one that takes plain TCP only.
        { aeTitle: 'TLS_DEST', host: '127.0.0.1', port: tlsDestPort, services: [] },
        { aeTitle: 'PLAIN_DEST', host: '127.0.0.1', port: plainDestPort, services: [], tls: false },
      ]),
    }).dimse!;
    scp = await startAppDimseListener(t.app, config, 'http://imaging-lake.test/dicomweb');
    for (let n = 1; n <= 3; n++) {
      const file = path.join(dir, `i${n}.dcm`);
      await fs.writeFile(file, createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: series, instanceNumber: n, patientID, patientName: 'TLS^PATIENT', rows: 8, columns: 8, bitsAllocated: 8, seed: n }).bytes);
      files.push(file);
    }
  }, 120_000);

  afterAll(async () => {
    for (const d of destinations) d.kill();
    await scp?.close();
    await t?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('a peer with a certificate of the trusted CA echoes and stores over TLS; what it stored is in the index', async () => {
    const echo = await dcmtk('echoscu', [...tlsArgs(device), '-aet', 'OCT_1', '-aec', AE, '127.0.0.1', port()]);
    expect(echo.output).toBe('');
    expect(echo.code).toBe(0);
    const store = await dcmtk('storescu', ['-v', ...tlsArgs(device), '-aet', 'OCT_1', '-aec', AE, '127.0.0.1', port(), ...files]);
    expect(store.code).toBe(0);
    expect(store.output).toMatch(/Received Store Response \(Success\)/);
    const res = await request(t.http).get(`/dicomweb/studies/${study}/series/${series}/instances`).set('Accept', 'application/dicom+json');
    expect(res.status).toBe(200);
    expect(res.body).toHaveLength(3);
  });

  test('plain TCP, TLS without a certificate, and a certificate the CA did not sign are all refused before association, nothing is stored, and each is audited as a failed sign-in (a bare TCP check is not)', async () => {
    const before = Date.now();
    const extra = path.join(dir, 'refused.dcm');
    const sop = newUid();
    await fs.writeFile(extra, createSyntheticInstance({ studyInstanceUID: study, seriesInstanceUID: series, sopInstanceUID: sop, instanceNumber: 9, patientID, rows: 8, columns: 8, bitsAllocated: 8 }).bytes);

    const plain = await dcmtk('storescu', ['-aet', 'OCT_1', '-aec', AE, '127.0.0.1', port(), extra]);
    expect(plain.code).not.toBe(0);
    const anonymous = await dcmtk('storescu', ['+tla', '+cf', ca.crt, '-aet', 'OCT_1', '-aec', AE, '127.0.0.1', port(), extra]);
    expect(anonymous.code).not.toBe(0);
    const untrusted = await dcmtk('storescu', [...tlsArgs(stranger), '-aet', 'OCT_1', '-aec', AE, '127.0.0.1', port(), extra]);
    expect(untrusted.code).not.toBe(0);
    expect(await stored(sop)).toBe('0');
    // A TCP check that connects and closes (a load balancer's) offers no credentials: not a failed sign-in.
    await new Promise<void>((resolve) => {
      const probe = net.connect(scp.port, '127.0.0.1', () => probe.destroy());
      probe.on('close', () => resolve());
    });
    await new Promise((r) => setTimeout(r, 300));

    let events: AuditEvent[] = [];
    for (let i = 0; i < 50 && events.length < 3; i++) {
      const rows = await t.app.db.knex('audit_events').select('resource');
      events = rows
        .map((r: { resource: unknown }) => (typeof r.resource === 'string' ? JSON.parse(r.resource) : r.resource) as AuditEvent)
        .filter((e) => e.entity?.some((x) => x.detail?.some((d) => d.type === 'service' && d.valueString === 'DIMSE TLS')) && Date.parse(e.recorded) >= before - 1000);
      if (events.length < 3) await new Promise((r) => setTimeout(r, 100));
    }
    expect(events).toHaveLength(3);
    for (const e of events) {
      expect(e.outcome).toBe('4');
      expect(e.outcomeDesc).toMatch(/^DICOM TLS handshake failed: /);
      expect(e.agent.some((a) => a.network?.address === '127.0.0.1' || a.network?.address === '::ffff:127.0.0.1')).toBe(true);
    }
  });

  test('a C-MOVE over TLS reaches a TLS destination with the listener\'s certificate, and a peer marked tls: false over plain TCP', async () => {
    const tlsReceived = await fs.mkdtemp(path.join(dir, 'tls-dest-'));
    const plainReceived = await fs.mkdtemp(path.join(dir, 'plain-dest-'));
    // storescp over TLS asks for the caller's certificate and checks it against the CA.
    destinations.push(spawn('storescp', [...tlsArgs(device), '-aet', 'TLS_DEST', '-od', tlsReceived, String(tlsDestPort)], { stdio: 'ignore' }));
    destinations.push(spawn('storescp', ['-aet', 'PLAIN_DEST', '-od', plainReceived, String(plainDestPort)], { stdio: 'ignore' }));
    await listening(tlsDestPort);
    await listening(plainDestPort);

    for (const [dest, received] of [
      ['TLS_DEST', tlsReceived],
      ['PLAIN_DEST', plainReceived],
    ] as const) {
      expect(await cMoveOverTls(scp.port, 'OCT_1', dest, study, series, device, ca.crt)).toBe(0x0000);
      expect(await fs.readdir(received)).toHaveLength(3);
    }
  });

  test('TLS settings: a certificate needs its key, a CA needs both; unreadable files stop the listener from starting', async () => {
    const base = { ...process.env, DIMSE_PORT: '0' };
    expect(() => loadConfig({ ...base, DIMSE_TLS_CERT: server.crt })).toThrow(/DIMSE_TLS_CERT and DIMSE_TLS_KEY: give both/);
    expect(() => loadConfig({ ...base, DIMSE_TLS_CA: ca.crt })).toThrow(/DIMSE_TLS_CA: needs DIMSE_TLS_CERT and DIMSE_TLS_KEY/);
    const missing = loadConfig({ ...base, DIMSE_HOST: '127.0.0.1', DIMSE_TLS_CERT: path.join(dir, 'nope.crt'), DIMSE_TLS_KEY: server.key }).dimse!;
    await expect(startAppDimseListener(t.app, missing, 'http://imaging-lake.test/dicomweb')).rejects.toThrow(/certificate, DIMSE_TLS_CERT \(.*nope\.crt\) cannot be read: ENOENT/);
  });
});
