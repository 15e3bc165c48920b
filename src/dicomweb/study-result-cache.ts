/**
 * The bytes of study results kept in memory between QIDO-RS requests (issue 3). The study list
 * by date sends some 800 results of ~0.9 kB each; reading their texts from PostgreSQL costs the
 * server more than everything else it does for the page (node-postgres decodes each into a
 * string, which is then encoded back to UTF-8). With this cache the page is read as ids and
 * revisions only (`studies.rev`, migration 20261127001000), and only the texts not held here,
 * or held at an older revision, are read, by id.
 *
 * Correct by construction: an entry is used only for the revision PostgreSQL names for the
 * study in the same request, so several server processes on one database each keep their own
 * entries and never serve a stale text. It holds `studies.qido_json` as stored, so only
 * searches answered with that text unchanged may use it (not a researcher's de-identified view).
 * Bounded: least recently used entries go once the estimated size passes `maxBytes`.
 */
import type { Knex } from 'knex';
import { findQidoStudyPageKeys, findStudyJsonByIds, type QidoSearch, type StudyJsonPlan, type StudyJsonVersion } from '../db/qido-search';
import { studyResultBytes, type StudyResultBytes } from './query-results';

/** Counters a test or a metrics endpoint can read. */
export interface StudyResultCacheStats {
  hits: number;
  misses: number;
  evictions: number;
  entries: number;
  bytes: number;
  maxBytes: number;
}

/** One kept result: its bytes at revision `rev`. */
interface Entry {
  rev: string;
  result: StudyResultBytes;
  size: number;
}

/** Memory of an entry besides its text bytes (the objects, the map slot, the UID string), estimated. */
const ENTRY_OVERHEAD_BYTES = 200;

/** The default cap: 32 MiB, the results of some 30,000 studies. */
export const DEFAULT_STUDY_RESULT_CACHE_BYTES = 32 * 1024 * 1024;

/** An LRU of study results by study id (`studies.id`), bounded by an estimate of the bytes it holds. */
export class StudyResultCache {
  private readonly entries = new Map<string, Entry>();
  private readonly counters = { hits: 0, misses: 0, evictions: 0, bytes: 0 };

  /** @param maxBytes the cap; 0 keeps nothing (every result is read from the database). */
  constructor(readonly maxBytes: number = DEFAULT_STUDY_RESULT_CACHE_BYTES) {}

  /** The result of study `id` at revision `rev`, if kept (it becomes the most recently used). */
  get(id: string, rev: string): StudyResultBytes | undefined {
    const entry = this.entries.get(id);
    if (!entry || entry.rev !== rev) {
      this.counters.misses++;
      return undefined;
    }
    this.counters.hits++;
    // Map keeps insertion order: re-inserting makes this the most recently used entry.
    this.entries.delete(id);
    this.entries.set(id, entry);
    return entry.result;
  }

  /** Makes the result of a text read from the database, keeps it (replacing any other revision) and returns it. */
  add(row: StudyJsonVersion): StudyResultBytes {
    const id = String(row.id);
    const result = studyResultBytes(row);
    const size = result.bytes.length + 2 * result.studyUid.length + ENTRY_OVERHEAD_BYTES;
    const old = this.entries.get(id);
    if (old) {
      this.entries.delete(id);
      this.counters.bytes -= old.size;
    }
    if (size > this.maxBytes / 4) return result;
    this.entries.set(id, { rev: String(row.rev), result, size });
    this.counters.bytes += size;
    for (const [key, entry] of this.entries) {
      if (this.counters.bytes <= this.maxBytes) break;
      this.entries.delete(key);
      this.counters.bytes -= entry.size;
      this.counters.evictions++;
    }
    return result;
  }

  stats(): StudyResultCacheStats {
    return { ...this.counters, entries: this.entries.size, maxBytes: this.maxBytes };
  }
}

/**
 * The results of a study page by date (isPreparedPage) in result order: the page's ids and
 * revisions first, then the texts of the studies the cache does not hold at those revisions,
 * by id, which the cache keeps. A study deleted between the two reads is left out (as if the
 * search had run after the delete); one changed meanwhile is answered with its newer text.
 */
export async function readStudyPage(knex: Knex, search: QidoSearch, plan: StudyJsonPlan, cache: StudyResultCache): Promise<{ results: StudyResultBytes[]; more: boolean }> {
  const { keys, more } = await findQidoStudyPageKeys(knex, search);
  const results: Array<StudyResultBytes | undefined> = new Array(keys.length);
  const missing: string[] = [];
  for (let i = 0; i < keys.length; i++) {
    const id = String(keys[i].id);
    const hit = cache.get(id, String(keys[i].rev));
    if (hit) results[i] = hit;
    else missing.push(id);
  }
  if (missing.length === 0) return { results: results as StudyResultBytes[], more };
  const read = new Map<string, StudyResultBytes>();
  for (const row of await findStudyJsonByIds(knex, missing, plan)) read.set(String(row.id), cache.add(row));
  const out: StudyResultBytes[] = [];
  for (let i = 0; i < keys.length; i++) {
    const result = results[i] ?? read.get(String(keys[i].id));
    if (result) out.push(result);
  }
  return { results: out, more };
}
