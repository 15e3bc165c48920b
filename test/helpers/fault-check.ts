import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Knex } from 'knex';
import pino from 'pino';
import type { AppConfig } from '../../src/config';
import { createDatabase } from '../../src/db/database';
import type { BlobStore } from '../../src/storage/blob-store';
import { createBlobStore } from '../../src/storage/create-blob-store';

/**
 * Invariant checks of the index against the blob store, run in the test process on the same
 * configuration as the server (the embedded engine only once the server is stopped: PGlite
 * is single-process). Each returns a list of violations, empty when the invariant holds, so a
 * failing test prints what is wrong.
 */

export interface IndexView {
  knex: Knex;
  blobs: BlobStore;
  close(): Promise<void>;
}

/** Opens the server's index and blob store without migrating or sweeping anything. */
export async function openIndex(config: AppConfig): Promise<IndexView> {
  const db = createDatabase(config.database, pino({ level: 'silent' }));
  const blobs = createBlobStore(config.blobs);
  return {
    knex: db.knex,
    blobs,
    async close() {
      await blobs.close();
      await db.close();
    },
  };
}

/** SHA-256 of `bytes` as lowercase hex: the blob key of those bytes. */
export function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Index rows (current instances and kept versions) whose blob is not in the store. */
export async function danglingRows(view: IndexView): Promise<string[]> {
  const rows: Array<{ uid: string; blob_key: string; kind: string }> = (
    await view.knex.raw(
      `SELECT sop_instance_uid AS uid, blob_key, 'instance' AS kind FROM instances
       UNION ALL SELECT sop_instance_uid, blob_key, 'version' FROM instance_versions`,
    )
  ).rows;
  const out: string[] = [];
  for (const r of rows) {
    const st = await view.blobs.stat(r.blob_key);
    if (!st) out.push(`${r.kind} ${r.uid} -> missing blob ${r.blob_key}`);
  }
  return out;
}

/** Study and series aggregates that differ from counts computed from the instance rows. */
export async function aggregateMismatches(knex: Knex): Promise<string[]> {
  const series: Array<Record<string, unknown>> = (
    await knex.raw(
      `SELECT se.series_uid, se.num_instances, (SELECT count(*) FROM instances i WHERE i.series_pk = se.id)::int AS actual
       FROM series se`,
    )
  ).rows;
  const studies: Array<Record<string, unknown>> = (
    await knex.raw(
      `SELECT st.study_uid, st.num_series, st.num_instances, st.modalities,
              (SELECT count(*) FROM series se WHERE se.study_pk = st.id)::int AS actual_series,
              (SELECT count(*) FROM instances i WHERE i.study_pk = st.id)::int AS actual_instances,
              (SELECT count(DISTINCT se.id) FROM instances i JOIN series se ON se.id = i.series_pk WHERE i.study_pk = st.id)::int AS series_with_instances,
              coalesce((SELECT array_agg(DISTINCT se.modality ORDER BY se.modality) FROM series se
                         WHERE se.study_pk = st.id AND se.modality IS NOT NULL), '{}') AS actual_modalities
       FROM studies st`,
    )
  ).rows;
  const out: string[] = [];
  for (const s of series) {
    if (Number(s.num_instances) !== Number(s.actual) || Number(s.actual) === 0) {
      out.push(`series ${s.series_uid}: num_instances ${s.num_instances}, rows ${s.actual}`);
    }
  }
  for (const s of studies) {
    if (
      Number(s.num_series) !== Number(s.actual_series) ||
      Number(s.num_instances) !== Number(s.actual_instances) ||
      Number(s.actual_series) !== Number(s.series_with_instances) ||
      Number(s.actual_instances) === 0 ||
      JSON.stringify(s.modalities) !== JSON.stringify(s.actual_modalities)
    ) {
      out.push(
        `study ${s.study_uid}: num_series ${s.num_series} (rows ${s.actual_series}, with instances ${s.series_with_instances}), ` +
          `num_instances ${s.num_instances} (rows ${s.actual_instances}), modalities ${JSON.stringify(s.modalities)} vs ${JSON.stringify(s.actual_modalities)}`,
      );
    }
  }
  // Instances whose study is not the study of their series.
  const misplaced: Array<Record<string, unknown>> = (
    await knex.raw(`SELECT i.sop_instance_uid FROM instances i JOIN series se ON se.id = i.series_pk WHERE se.study_pk <> i.study_pk`)
  ).rows;
  for (const m of misplaced) out.push(`instance ${m.sop_instance_uid}: study differs from its series' study`);
  return out;
}

/** The same UID (or patient identity, or version number) indexed more than once. */
export async function duplicateRows(knex: Knex): Promise<string[]> {
  const checks: Array<[string, string]> = [
    ['instances', `SELECT sop_instance_uid AS k, count(*)::int AS n FROM instances GROUP BY 1 HAVING count(*) > 1`],
    ['series', `SELECT series_uid AS k, count(*)::int AS n FROM series GROUP BY 1 HAVING count(*) > 1`],
    ['studies', `SELECT study_uid AS k, count(*)::int AS n FROM studies GROUP BY 1 HAVING count(*) > 1`],
    ['patients', `SELECT identity_key AS k, count(*)::int AS n FROM patients GROUP BY 1 HAVING count(*) > 1`],
    ['instance_versions', `SELECT sop_instance_uid || '#' || version AS k, count(*)::int AS n FROM instance_versions GROUP BY 1 HAVING count(*) > 1`],
  ];
  const out: string[] = [];
  for (const [table, sql] of checks) {
    for (const r of (await knex.raw(sql)).rows as Array<{ k: string; n: number }>) out.push(`${table}: ${r.k} x${r.n}`);
  }
  return out;
}

/** Blobs in the store that no instance or kept version references. */
export async function unreferencedBlobs(view: IndexView): Promise<string[]> {
  const referenced = new Set<string>(
    (await view.knex.raw(`SELECT blob_key FROM instances UNION SELECT blob_key FROM instance_versions`)).rows.map(
      (r: { blob_key: string }) => r.blob_key,
    ),
  );
  const out: string[] = [];
  for await (const b of view.blobs.list()) if (!referenced.has(b.key)) out.push(b.key);
  return out;
}

/**
 * Acknowledged instances (SOP Instance UID -> SHA-256 of the bytes the client sent) that are
 * not indexed with exactly those bytes, or whose blob does not read back byte-identical.
 * `readBack` limits the byte comparison to some UIDs (all are checked against the index).
 */
export async function lostAcknowledged(view: IndexView, acknowledged: Map<string, string>, readBack?: Set<string>): Promise<string[]> {
  const out: string[] = [];
  const uids = [...acknowledged.keys()];
  const rows = new Map<string, string>();
  for (let i = 0; i < uids.length; i += 1000) {
    const batch: Array<{ sop_instance_uid: string; blob_key: string }> = await view
      .knex('instances')
      .whereIn('sop_instance_uid', uids.slice(i, i + 1000))
      .select('sop_instance_uid', 'blob_key');
    for (const r of batch) rows.set(r.sop_instance_uid, r.blob_key);
  }
  for (const [uid, sha] of acknowledged) {
    const key = rows.get(uid);
    if (!key) {
      out.push(`${uid}: acknowledged but not indexed`);
      continue;
    }
    if (key !== sha) {
      out.push(`${uid}: indexed with blob ${key}, acknowledged bytes ${sha}`);
      continue;
    }
    if (readBack && !readBack.has(uid)) continue;
    try {
      const hash = createHash('sha256');
      for await (const c of await view.blobs.read(key)) hash.update(c as Buffer);
      const got = hash.digest('hex');
      if (got !== sha) out.push(`${uid}: blob ${key} reads back as ${got}`);
    } catch (err) {
      out.push(`${uid}: blob ${key} unreadable: ${(err as Error).message}`);
    }
  }
  return out;
}

/** The local staging directory of the configured backend. */
export function stagingDir(config: AppConfig): string {
  return config.blobs.kind === 'fs' ? path.join(config.blobs.root, 'staging') : config.blobs.stagingDir;
}

/** Files left in the staging directory (spools of requests that are over should be gone). */
export function stagingLeftovers(config: AppConfig): string[] {
  try {
    return fs.readdirSync(stagingDir(config)).filter((n) => !n.startsWith('.health-'));
  } catch {
    return [];
  }
}
