import { spawn } from 'node:child_process';
import { Readable } from 'node:stream';
import { createAgent, postStow, sendAll, type PreparedRequest } from './stow-client';

/**
 * The load generator's own ceiling: the same requests sent over loopback HTTP to a child
 * process that only counts the bytes and answers like a successful STOW. Whatever the server
 * does on top of receiving the bytes costs throughput relative to this.
 */

const SINK_SOURCE = `
const http = require('node:http');
const answer = JSON.stringify({ '00081199': { vr: 'SQ', Value: [{}] } });
const server = http.createServer((req, res) => {
  req.on('data', () => undefined);
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/dicom+json', 'content-length': Buffer.byteLength(answer) });
    res.end(answer);
  });
});
server.requestTimeout = 0;
server.listen(0, '127.0.0.1', () => process.stdout.write(server.address().port + '\\n'));
`;

/** A discarding HTTP server in its own process. */
export async function withHttpSink<T>(work: (baseUrl: string) => Promise<T>): Promise<T> {
  const child = spawn(process.execPath, ['-e', SINK_SOURCE], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`HTTP sink exited with ${code}`)));
      child.stdout!.once('data', (d: Buffer) => resolve(Number(String(d).trim())));
    });
    return await work(`http://127.0.0.1:${port}`);
  } finally {
    child.kill();
  }
}

/** MB/s of sending `count` in-memory bodies of `bytes` each, one at a time, to the sink. */
export async function measureBufferedUpload(baseUrl: string, count: number, bytes: number): Promise<number> {
  const body = Buffer.alloc(bytes, 0x5a);
  const requests: PreparedRequest[] = Array.from({ length: count }, () => ({
    body,
    contentType: 'multipart/related; type="application/dicom"; boundary=x',
    instances: 1,
    dicomBytes: bytes,
  }));
  const t0 = performance.now();
  const stats = await sendAll({ baseUrl }, requests, 1, 120_000);
  if (stats.failures) throw new Error(`HTTP sink upload failed: ${stats.failureSamples.join('; ')}`);
  return (count * bytes) / 1e6 / ((performance.now() - t0) / 1000);
}

/** MB/s (of `dicomBytes`) of streaming one generated body of `length` bytes to the sink. */
export async function measureStreamedUpload(baseUrl: string, body: { body: Readable; length: number; contentType: string; dicomBytes: number }): Promise<number> {
  const agent = createAgent(1);
  try {
    const t0 = performance.now();
    const o = await postStow({ baseUrl }, agent, body.body, body.contentType, body.length, 1, 900_000);
    if (o.problem) throw new Error(`HTTP sink upload failed: ${o.problem}`);
    return body.dicomBytes / 1e6 / ((performance.now() - t0) / 1000);
  } finally {
    agent.destroy();
  }
}
