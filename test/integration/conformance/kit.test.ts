import { spawn } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import path from 'node:path';
import express from 'express';
import { runConformanceKit, type KitResult } from '../../../conformance/kit/run';
import { startTestApp, type TestApp } from '../../helpers/test-app';

const ROOT = path.resolve(__dirname, '../../..');

function listen(app: express.Express | TestApp['app']['express']): Promise<{ server: Server; baseUrl: string }> {
  return new Promise((resolve) => {
    const server = app.listen(0, '127.0.0.1', () => resolve({ server, baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }));
  });
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Runs the kit CLI as an operator does and returns its exit code and output. */
function runKitCli(args: string[]): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'conformance/kit/run.ts'), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.once('exit', (code) => resolve({ code, stdout }));
  });
}

describe('conformance kit against imaging-lake', () => {
  let t: TestApp;
  let server: Server;
  let result: KitResult;
  const lines: string[] = [];

  beforeAll(async () => {
    t = await startTestApp();
    ({ server } = await listen(t.app.express));
    const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    result = await runConformanceKit({ baseUrl, token: t.adminToken, dicomwebPath: '/dicomweb', fhirPath: '/fhir', peer: false }, (l) => lines.push(l));
  });

  afterAll(async () => {
    if (server) await close(server);
    await t?.close();
  });

  it('passes every check with an admin token', () => {
    const notPassed = result.results.filter((r) => r.outcome !== 'PASS');
    expect(notPassed).toEqual([]);
    expect(result.ok).toBe(true);
  });

  it('with --peer skips exactly the checks marked imaging-lake-only and passes the rest', async () => {
    const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const peer = await runConformanceKit({ baseUrl, token: t.adminToken, dicomwebPath: '/dicomweb', fhirPath: '/fhir', peer: true }, () => undefined);
    expect(peer.results.filter((r) => r.outcome === 'SKIP').map((r) => r.name)).toEqual(peer.results.filter((r) => r.oursOnly).map((r) => r.name));
    expect(peer.results.filter((r) => r.oursOnly).length).toBeGreaterThanOrEqual(3);
    expect(peer.summary.FAIL).toBe(0);
  });

  it('runs both the DICOMweb and the FHIR checks and prints one line per check and a summary', () => {
    expect(result.results.filter((r) => r.group === 'dicomweb').length).toBeGreaterThanOrEqual(15);
    expect(result.results.filter((r) => r.group === 'fhir').length).toBeGreaterThanOrEqual(6);
    expect(lines.length).toBe(result.results.length + 1);
    expect(lines.at(-1)).toMatch(new RegExp(`^summary: ${result.summary.PASS} passed, 0 failed, 0 skipped`));
  });
});

describe('conformance kit against a server that answers wrongly', () => {
  let server: Server;
  let baseUrl: string;

  beforeAll(async () => {
    // A stub that accepts everything with 200 and an empty body: no check may pass on it.
    const stub = express();
    stub.use((_req, res) => {
      res.status(200).end();
    });
    ({ server, baseUrl } = await listen(stub));
  });

  afterAll(async () => {
    if (server) await close(server);
  });

  it('reports FAIL for the store check and skips what depends on it', async () => {
    const lines: string[] = [];
    const result = await runConformanceKit({ baseUrl, dicomwebPath: '/dicomweb', fhirPath: '/fhir', only: 'dicomweb', peer: false }, (l) => lines.push(l));
    const store = result.results.find((r) => r.name.startsWith('Store Instances (PS3.18 10.5)'));
    expect(store).toMatchObject({ outcome: 'FAIL' });
    expect(store!.reason).toMatch(/Content-Type|JSON|ReferencedSOPSequence/);
    expect(result.results.find((r) => r.name.startsWith('Retrieve Frames (PS3.18'))).toMatchObject({ outcome: 'SKIP', reason: 'the STOW-RS check did not pass' });
    expect(result.ok).toBe(false);
    expect(lines.some((l) => l.startsWith('FAIL dicomweb: Store Instances'))).toBe(true);
  });

  it('exits non-zero from the command line', async () => {
    const { code, stdout } = await runKitCli(['--base-url', baseUrl, '--only', 'fhir']);
    expect(code).toBe(1);
    expect(stdout).toMatch(/^FAIL fhir: GET metadata/m);
    expect(stdout).toMatch(/^summary: 0 passed, \d+ failed/m);
  });

  it('exits 2 with the usage text on a bad argument', async () => {
    const { code } = await runKitCli(['--base-url', 'not-a-url']);
    expect(code).toBe(2);
  });
});
