import type { Writable } from 'node:stream';

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
    for await (const chunk of source) {
      const waits: Promise<unknown>[] = [];
      for (const t of live) {
        if (t.destroyed || t.writableEnded) {
          live.delete(t);
          continue;
        }
        if (!t.write(chunk)) waits.push(drainOrFail(t));
      }
      if (waits.length > 0) await Promise.all(waits);
    }
  } catch (err) {
    for (const t of targets) if (!t.destroyed) t.destroy(err as Error);
    throw err;
  }
  for (const t of live) if (!t.destroyed && !t.writableEnded) t.end();
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
