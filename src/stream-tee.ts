import { Readable, type Writable } from 'node:stream';

/**
 * Copies every chunk of `source` into each target, waiting for the slowest (backpressure),
 * then ends them. A target that fails is dropped (its own promise reports the error) while
 * the others keep receiving bytes, so one failed consumer never stalls the request stream.
 * Rejects only when the source itself fails (e.g. the client went away).
 */
export async function teeInto(source: AsyncIterable<Buffer>, targets: Writable[]): Promise<void> {
  const live = new Set(targets);
  for (const t of targets) t.once('error', () => live.delete(t));
  try {
    if (source instanceof Readable) await teeReadable(source, live);
    else await teeIterable(source, live);
  } catch (err) {
    for (const t of targets) if (!t.destroyed) t.destroy(err as Error);
    throw err;
  }
  for (const t of live) if (!t.destroyed && !t.writableEnded) t.end();
}

/** Writes `chunk` to every live target; returns the waits of those that asked to slow down. */
function writeToAll(chunk: Buffer, live: Set<Writable>): Promise<void>[] {
  const waits: Promise<void>[] = [];
  for (const t of live) {
    if (t.destroyed || t.writableEnded) {
      live.delete(t);
      continue;
    }
    if (!t.write(chunk)) waits.push(drainOrFail(t));
  }
  return waits;
}

async function teeIterable(source: AsyncIterable<Buffer>, live: Set<Writable>): Promise<void> {
  for await (const chunk of source) {
    const waits = writeToAll(chunk, live);
    if (waits.length > 0) await Promise.all(waits);
  }
}

/**
 * A stream source is read in flowing mode, paused while a target is full: chunks reach the
 * targets as they arrived, where async iteration would join whatever had queued up into a new
 * buffer (a copy of most of a large upload) and cost a promise per chunk.
 */
function teeReadable(source: Readable, live: Set<Writable>): Promise<void> {
  return new Promise((resolve, reject) => {
    let waiting = 0;
    let settled = false;
    const settle = (err?: Error) => {
      if (settled) return;
      settled = true;
      source.off('data', onData);
      source.off('end', onEnd);
      source.off('error', onError);
      source.off('close', onClose);
      // Whatever the source does after this (a late destroy) is no longer the tee's concern.
      source.on('error', () => undefined);
      if (err) reject(err);
      else resolve();
    };
    const onDrained = () => {
      if (--waiting === 0 && !settled) source.resume();
    };
    const onData = (chunk: Buffer) => {
      const waits = writeToAll(chunk, live);
      if (waits.length === 0) return;
      waiting += waits.length;
      source.pause();
      for (const w of waits) void w.then(onDrained);
    };
    const onEnd = () => settle();
    const onError = (err: Error) => settle(err);
    // Destroyed without an error and without its end: the bytes stopped short.
    const onClose = () => {
      if (!source.readableEnded) settle(Object.assign(new Error('premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }));
    };
    if (source.readableEnded) return settle();
    if (source.destroyed) return onClose();
    source.on('data', onData);
    source.once('end', onEnd);
    source.once('error', onError);
    source.once('close', onClose);
  });
}

/** Resolves when the target drains, closes or fails (a failed target was already dropped from the live set). */
function drainOrFail(t: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      t.off('drain', done);
      t.off('close', done);
      t.off('error', done);
      resolve();
    };
    t.on('drain', done);
    t.on('close', done);
    t.on('error', done);
  });
}
