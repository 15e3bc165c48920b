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

/**
 * Untimed requests before a timed upload: a freshly started sink answers its first large bodies
 * several times slower than later ones (its JIT, the loopback socket buffers growing), which put
 * the floor at 185-241 MB/s where the warm sink takes 0.7-2.9 GB/s on the same machine.
 */
const SINK_WARM_UP_REQUESTS = 3;
/** At least this many timed requests: two bodies of 23 MB are over in a tenth of a second. */
const MIN_TIMED_UPLOADS = 8;

/** MB/s of sending `count` (at least 8) in-memory bodies of `bytes` each, one at a time, to the warmed-up sink. */
export async function measureBufferedUpload(baseUrl: string, count: number, bytes: number): Promise<number> {
  const request: PreparedRequest = {
    body: Buffer.alloc(bytes, 0x5a),
    contentType: 'multipart/related; type="application/dicom"; boundary=x',
    instances: 1,
    dicomBytes: bytes,
  };
  const warm = await sendAll({ baseUrl }, Array.from({ length: SINK_WARM_UP_REQUESTS }, () => request), 1, 120_000);
  if (warm.failures) throw new Error(`HTTP sink upload failed: ${warm.failureSamples.join('; ')}`);
  const timed = Array.from({ length: Math.max(count, MIN_TIMED_UPLOADS) }, () => request);
  const t0 = performance.now();
  const stats = await sendAll({ baseUrl }, timed, 1, 120_000);
  if (stats.failures) throw new Error(`HTTP sink upload failed: ${stats.failureSamples.join('; ')}`);
  return (timed.length * bytes) / 1e6 / ((performance.now() - t0) / 1000);
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
