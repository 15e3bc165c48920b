import { adoptUnknownBlobs, sweepUnreferenced } from '../db/blob-ledger';
import type { Database } from '../db/database';
import type { Logger } from '../logger';
import type { BlobStore } from '../storage/blob-store';

/** Removes blobs no index row references (crash leftovers, failed ingests, deletes) after a grace period. */
export interface OrphanSweeper {
  /** Runs one sweep now. */
  sweep(options?: { full?: boolean }): Promise<SweepReport>;
  stop(): Promise<void>;
}

export interface SweepReport {
  stagingRemoved: number;
  adopted: number;
  blobsRemoved: number;
}

interface SweeperDeps {
  db: Database;
  blobs: BlobStore;
  logger: Logger;
  graceSeconds: number;
  /** 0: no timer, sweep only on demand. */
  intervalSeconds: number;
}

/**
 * Starts the periodic sweeper. A regular sweep uses the blob ledger only (cheap at any
 * scale); a full sweep also lists the store to adopt blobs the ledger never saw.
 */
export function startOrphanSweeper(deps: SweeperDeps): OrphanSweeper {
  let running: Promise<SweepReport> | null = null;
  const sweep = (options: { full?: boolean } = {}) => {
    running ??= sweepOnce(deps, options.full ?? false).finally(() => {
      running = null;
    });
    return running;
  };
  let timer: NodeJS.Timeout | null = null;
  if (deps.intervalSeconds > 0) {
    timer = setInterval(() => {
      sweep().catch((err) => deps.logger.warn({ err }, 'orphan sweep failed'));
    }, deps.intervalSeconds * 1000);
    timer.unref();
  }
  return {
    sweep,
    async stop() {
      if (timer) clearInterval(timer);
      await running?.catch(() => undefined);
    },
  };
}

async function sweepOnce(deps: SweeperDeps, full: boolean): Promise<SweepReport> {
  const graceMs = deps.graceSeconds * 1000;
  const stagingRemoved = await deps.blobs.cleanStaging(graceMs);
  let adopted = 0;
  if (full) {
    let batch: Array<{ key: string; lastModified: Date }> = [];
    for await (const entry of deps.blobs.list()) {
      batch.push(entry);
      if (batch.length >= 1000) {
        adopted += await adoptUnknownBlobs(deps.db.knex, batch);
        batch = [];
      }
    }
    adopted += await adoptUnknownBlobs(deps.db.knex, batch);
  }
  const cutoff = new Date(Date.now() - graceMs);
  let blobsRemoved = 0;
  for (;;) {
    const removed = await sweepUnreferenced(deps.db.knex, cutoff, 500, (key) => deps.blobs.delete(key));
    blobsRemoved += removed.length;
    if (removed.length < 500) break;
  }
  const report = { stagingRemoved, adopted, blobsRemoved };
  if (stagingRemoved + adopted + blobsRemoved > 0) deps.logger.info(report, 'orphan sweep');
  return report;
}
