import type { Knex } from 'knex';
import { queryPrepared } from './prepared-statement';

/**
 * The blob ledger (migration 20261122000200): claims made before bytes are committed, and
 * the locked look-up the orphan sweeper uses, so a sweep and an ingest of the same content
 * can never interleave into an index row that points at a deleted blob.
 */

/** Marks `key` as in use now. Waits if a sweeper holds the row, so the ingest then rewrites the bytes. */
export async function claimBlob(knex: Knex, key: string, size: number): Promise<void> {
  await claimBlobs(knex, [{ key, size }]);
}

/**
 * Marks every key as in use now, in one statement. Keys are deduplicated (one statement may
 * not update a row twice) and sorted, so concurrent claimers lock ledger rows in the same
 * order and cannot deadlock each other; a sweeper skips locked rows and never waits.
 */
export async function claimBlobs(knex: Knex, claims: Array<{ key: string; size: number }>): Promise<void> {
  if (claims.length === 0) return;
  const bySize = new Map<string, number>();
  for (const c of claims) bySize.set(c.key, c.size);
  const keys = [...bySize.keys()].sort();
  await queryPrepared(knex, CLAIM, [keys, keys.map((k) => bySize.get(k)!)]);
}

const CLAIM = `INSERT INTO blobs (key, size, claimed_at)
  SELECT k, s, now() FROM unnest(?::text[], ?::bigint[]) AS u(k, s) ORDER BY k
  ON CONFLICT (key) DO UPDATE SET claimed_at = now(), size = excluded.size`;

/** Claims one blob, sharing a statement with the other claims waiting at the same moment. */
export type BlobClaimer = (key: string, size: number) => Promise<void>;

const claimers = new WeakMap<Knex, BlobClaimer>();

/**
 * The claimer of a database (created on first use): while one claim statement runs, new claims
 * queue and then go together in the next statement (group commit), so the fifty parts of one
 * STOW request, and those of concurrent requests, cost a few round trips and WAL flushes
 * instead of one each. A failed statement fails every claim it carried.
 */
export function blobClaimerOf(knex: Knex): BlobClaimer {
  let claimer = claimers.get(knex);
  if (!claimer) {
    claimer = createBlobClaimer(knex);
    claimers.set(knex, claimer);
  }
  return claimer;
}

interface PendingClaim {
  key: string;
  size: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

function createBlobClaimer(knex: Knex): BlobClaimer {
  let queue: PendingClaim[] = [];
  let running = false;
  const flush = async (): Promise<void> => {
    running = true;
    while (queue.length > 0) {
      const batch = queue;
      queue = [];
      try {
        await claimBlobs(knex, batch);
        for (const c of batch) c.resolve();
      } catch (err) {
        for (const c of batch) c.reject(err);
      }
    }
    running = false;
  };
  return (key, size) =>
    new Promise<void>((resolve, reject) => {
      queue.push({ key, size, resolve, reject });
      // Wait one turn of the event loop so the parts of a request parsed together share the first statement.
      if (!running) {
        running = true;
        setImmediate(() => void flush());
      }
    });
}

/** Records blobs found in the store that the ledger does not know, dated by their modification time. */
export async function adoptUnknownBlobs(knex: Knex, found: Array<{ key: string; lastModified: Date }>): Promise<number> {
  if (found.length === 0) return 0;
  const result = await knex.raw(
    `INSERT INTO blobs (key, claimed_at, created_at)
     SELECT k, m, m FROM unnest(?::text[], ?::timestamptz[]) AS u(k, m)
     ON CONFLICT (key) DO NOTHING`,
    [found.map((f) => f.key), found.map((f) => f.lastModified.toISOString())],
  );
  return result.rowCount ?? 0;
}

/**
 * In one transaction: locks ledger rows claimed before `cutoff` that no instance, instance
 * version or bulk export file references, calls `remove` for each (deleting the bytes), then drops the rows.
 * Rows locked by a concurrent claim are skipped.
 */
export async function sweepUnreferenced(
  knex: Knex,
  cutoff: Date,
  limit: number,
  remove: (key: string) => Promise<void>,
): Promise<string[]> {
  return knex.transaction(async (trx) => {
    const rows: Array<{ key: string }> = (
      await trx.raw(
        `SELECT b.key FROM blobs b
         WHERE b.claimed_at < ?
           AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.blob_key = b.key)
           AND NOT EXISTS (SELECT 1 FROM instance_versions v WHERE v.blob_key = b.key)
           AND NOT EXISTS (SELECT 1 FROM bulk_export_files f WHERE f.blob_key = b.key)
         ORDER BY b.claimed_at
         LIMIT ?
         FOR UPDATE SKIP LOCKED`,
        [cutoff.toISOString(), limit],
      )
    ).rows;
    const removed: string[] = [];
    for (const { key } of rows) {
      await remove(key);
      removed.push(key);
    }
    if (removed.length > 0) await trx('blobs').whereIn('key', removed).delete();
    return removed;
  });
}
