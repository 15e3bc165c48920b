import type { Readable } from 'node:stream';

/** A supertest parser that keeps an answer's body as the raw bytes received: `.buffer(true).parse(binaryBody)`. */
export function binaryBody(res: unknown, done: (err: Error | null, body: Buffer) => void): void {
  const stream = res as Readable;
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  stream.on('end', () => done(null, Buffer.concat(chunks)));
}
