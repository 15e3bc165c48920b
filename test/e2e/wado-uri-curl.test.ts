/**
 * WADO-URI as a plain HTTP client sees it: `curl` against the composed server on a real port,
 * with the URLs a wadouri image loader (Cornerstone/OHIF, Weasis) builds. The Part 10 file comes
 * back byte for byte, the default answer is a JPEG, and a request without a token is refused.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { createInstanceScanner } from '../../src/dicom/instance-scanner';
import { startDicomwebServer, storeFiles, type DicomwebServer } from '../helpers/e2e-servers';
import { sharedData } from '../helpers/test-app';

const run = promisify(execFile);
const CT = sharedData('dicom/transfer-syntax/wg04__CT1_UNC.dcm');
const hasCurl = fs.existsSync('/usr/bin/curl') || fs.existsSync('/usr/local/bin/curl');
const describeWithCurl = hasCurl ? describe : describe.skip;

/** curl -s: the status line and headers (-D) and the body (-o) of one GET. */
async function curl(url: string, token?: string): Promise<{ status: number; headers: string; body: Buffer }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wado-uri-'));
  try {
    const args = ['-s', '-D', path.join(dir, 'h'), '-o', path.join(dir, 'b'), ...(token ? ['-H', `Authorization: Bearer ${token}`] : []), url];
    await run('curl', args);
    const headers = fs.readFileSync(path.join(dir, 'h'), 'latin1');
    return { status: Number(/^HTTP\/[\d.]+ (\d{3})/.exec(headers)?.[1]), headers, body: fs.readFileSync(path.join(dir, 'b')) };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describeWithCurl('WADO-URI over a real listening server (curl)', () => {
  let server: DicomwebServer;
  let token: string;
  let query: string;

  beforeAll(async () => {
    server = await startDicomwebServer('http://127.0.0.1:1');
    token = server.testApp.adminToken;
    await storeFiles(server.dicomwebRoot, [CT], { token });
    const scanner = createInstanceScanner({ maxHeaderBytes: 16 << 20 });
    scanner.writable.end(fs.readFileSync(CT));
    const a = (await scanner.result).attributes;
    query = `requestType=WADO&studyUID=${a.studyInstanceUID}&seriesUID=${a.seriesInstanceUID}&objectUID=${a.sopInstanceUID}`;
  });
  afterAll(() => server?.close());

  test('contentType=application/dicom gives the Part 10 file as stored', async () => {
    const res = await curl(`${server.dicomwebRoot}/wado?${query}&contentType=application%2Fdicom`, token);
    expect(res.status).toBe(200);
    expect(res.headers).toMatch(/content-type: application\/dicom; transfer-syntax=1\.2\.840\.10008\.1\.2\.1/i);
    expect(res.body.subarray(128, 132).toString('latin1')).toBe('DICM');
    expect(res.body.equals(fs.readFileSync(CT))).toBe(true);
  });

  test('no contentType gives a baseline JPEG', async () => {
    const res = await curl(`${server.dicomwebRoot}/wado?${query}`, token);
    expect(res.status).toBe(200);
    expect(res.headers).toMatch(/content-type: image\/jpeg/i);
    expect([...res.body.subarray(0, 3)]).toEqual([0xff, 0xd8, 0xff]);
    // Baseline (SOF0), as PS3.18 8.7.4 requires of image/jpeg.
    expect(res.body.includes(Buffer.from([0xff, 0xc0]))).toBe(true);
  });

  test('no token: 401 with WWW-Authenticate, and nothing of the object', async () => {
    const res = await curl(`${server.dicomwebRoot}/wado?${query}&contentType=application%2Fdicom`);
    expect(res.status).toBe(401);
    expect(res.headers).toMatch(/www-authenticate: Bearer/i);
    expect(res.body.includes(Buffer.from('DICM'))).toBe(false);
  });
});
