import type { Knex } from 'knex';

/**
 * The blob ledger (migration 20261122000200): claims made before bytes are committed, and
 * the locked look-up the orphan sweeper uses, so a sweep and an ingest of the same content
 * can never interleave into an index row that points at a deleted blob.
 */

/** Marks `key` as in use now. Waits if a sweeper holds the row, so the ingest then rewrites the bytes. */
export async function claimBlob(knex: Knex, key: string, size: number): Promise<void> {
  await knex.raw(
    `INSERT INTO blobs (key, size, claimed_at) VALUES (?, ?, now())
     ON CONFLICT (key) DO UPDATE SET claimed_at = now(), size = excluded.size`,
    [key, size],
  );
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
 * In one transaction: locks ledger rows claimed before `cutoff` that no instance or instance
 * version references, calls `remove` for each (deleting the bytes), then drops the rows.
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
