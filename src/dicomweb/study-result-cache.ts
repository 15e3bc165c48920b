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
 * entries and never serve a stale text. It holds `studies.qido_json` (as stored, or with the
 * RetrieveURL of the request that read it written in: see add), so only searches answered with
 * that text unchanged may use it (not a researcher's de-identified view).
 * Bounded: least recently used entries go once the estimated size passes `maxBytes`.
 */
import type { Knex } from 'knex';
import { findQidoStudyPageKeys, findQidoStudyPageTexts, findQidoStudyPageVersions, STUDY_URL_PLACEHOLDER, type QidoSearch, type StudyJsonPlan, type StudyJsonVersion } from '../db/qido-search';
import { STUDY_URL_TAIL, studyResultSpliceAt, studyResultUrlAt, studyResultUrlHead, type StudyResultBytes } from './query-results';

/** Counters a test or a metrics endpoint can read. */
export interface StudyResultCacheStats {
  hits: number;
  misses: number;
  /** Result texts read from the database for pages (those kept included, on pages read whole). */
  textsRead: number;
  evictions: number;
  entries: number;
  bytes: number;
  maxBytes: number;
}

/**
 * Memory that holds the bytes of several kept results (those read by one request): one
 * allocation instead of one per result (measured: 0.36 against 0.9 ms of CPU for the 820
 * texts of a 30-day page). It is counted whole as long as one of its results is kept.
 */
interface Block {
  size: number;
  kept: number;
}

/** One kept result: its bytes at revision `rev` (one object per result). */
interface Entry extends StudyResultBytes {
  rev: number;
  block: Block;
  /** Read since it was last passed over for eviction (it then gets a second chance). */
  used: boolean;
}

/** Memory of an entry besides its text bytes (the object, the map slot, id and revision strings), estimated. */
const ENTRY_OVERHEAD_BYTES = 160;
/** Distinct RetrieveURL heads (base URLs of requests) results are finished with; texts read under others are kept as stored. */
const MAX_HEADS = 8;
/** The largest block (texts of one request beyond it get further blocks). */
const BLOCK_BYTES = 1 << 20;

/** The cap when none is given: 128 MiB, the default results of some 100,000 studies (~1.25 kB each, all counted). */
export const DEFAULT_STUDY_RESULT_CACHE_BYTES = 128 * 1024 * 1024;

/**
 * A cache of study results by study id (`studies.id`), bounded by the bytes it holds: the blocks
 * of the kept results and an estimate of each result's other memory. Results not read for the
 * longest go first, approximately (second chance, "CLOCK"): a read only marks its entry, and
 * eviction moves marked entries to the back instead of dropping them. Moving every entry read
 * (an exact LRU) cost ~1 µs per result read, ~0.9 ms of a 30-day page of 820 studies, with
 * 50,000 studies kept.
 */
export class StudyResultCache {
  /** By study id: a number (bigint ids are exact below 2^53), so that a look-up makes no string. */
  private readonly entries = new Map<number, Entry>();
  private readonly counters = { hits: 0, misses: 0, textsRead: 0, evictions: 0, bytes: 0 };
  /** RetrieveURL heads results were finished with (see add). */
  private readonly heads = new Map<string, Buffer>();
  /** Share of the results of recent pages that were not kept (a moving average; see readStudyPage). */
  private missShare = 1;

  /** @param maxBytes the cap; 0 keeps nothing (every result is read from the database). */
  constructor(readonly maxBytes: number = DEFAULT_STUDY_RESULT_CACHE_BYTES) {}

  /** The result of study `id` at revision `rev`, if kept (marked as read). */
  get(id: number | string, rev: number | string): StudyResultBytes | undefined {
    const entry = this.entries.get(Number(id));
    if (!entry || entry.rev !== Number(rev)) {
      this.counters.misses++;
      return undefined;
    }
    this.counters.hits++;
    entry.used = true;
    return entry;
  }

  /**
   * Makes the results of texts read from the database (in their order), keeps them, each in
   * place of any other revision of its study, and returns them. A block larger than a quarter
   * of the cap is not kept. With `head` (studyResultUrlHead of the request) each text that a
   * splice serves is kept finished, its RetrieveURL written with that head, and every text is
   * followed by a comma: an answer with the same head then copies the results that follow one
   * another in a block at once (writeStudyResultBytesFrom), ~820 copies of a few pieces each
   * fewer on a 30-day page.
   */
  add(rows: readonly StudyJsonVersion[], head?: string): StudyResultBytes[] {
    const out: StudyResultBytes[] = [];
    const blockBytes = Math.min(BLOCK_BYTES, this.maxBytes / 4);
    const headBytes = head === undefined ? undefined : this.headBytes(head);
    // The RetrieveURL element in place of the placeholder, less the UID.
    const grows = headBytes ? headBytes.length + STUDY_URL_TAIL.length - STUDY_URL_PLACEHOLDER.length : 0;
    const sizes: number[] = new Array(rows.length);
    const spliceAt: number[] = new Array(rows.length);
    const ascii: boolean[] = new Array(rows.length);
    for (let i = 0; i < rows.length; i++) {
      spliceAt[i] = headBytes ? studyResultSpliceAt(rows[i]) : -1;
      const bytes = Buffer.byteLength(rows[i].json, 'utf8');
      // Byte length = length only when every character is ASCII: its UTF-8 is then its Latin-1, copied as it is.
      ascii[i] = bytes === rows[i].json.length;
      sizes[i] = bytes + (spliceAt[i] >= 0 ? grows + rows[i].study_uid.length : 0) + 1;
    }
    for (let first = 0; first < rows.length; ) {
      let size = 0;
      let end = first;
      for (; end < rows.length; end++) {
        if (end > first && size + sizes[end] > blockBytes) break;
        size += sizes[end];
      }
      // Memory of its own (not node's shared pool), so that the count is the memory held.
      const memory = Buffer.allocUnsafeSlow(size);
      const block: Block = { size, kept: 0 };
      let offset = 0;
      const kept = size <= this.maxBytes / 4;
      for (let i = first; i < end; i++) {
        const row = rows[i];
        const written = memory.write(row.json, offset, ascii[i] ? 'latin1' : 'utf8');
        let entry: Entry;
        if (spliceAt[i] >= 0 && headBytes) {
          // Bytes = characters only when every character is ASCII (any other takes two or more bytes).
          const urlAt = offset + (written === row.json.length ? spliceAt[i] : Buffer.byteLength(row.json.slice(0, spliceAt[i]), 'utf8'));
          const rest = urlAt + STUDY_URL_PLACEHOLDER.length;
          const restLength = offset + written - rest;
          const urlEnd = urlAt + headBytes.length + row.study_uid.length + STUDY_URL_TAIL.length;
          memory.copyWithin(urlEnd, rest, rest + restLength);
          let at = urlAt + headBytes.copy(memory, urlAt);
          // A UID a splice serves is digits and dots, one byte each.
          at += memory.write(row.study_uid, at, 'latin1');
          memory.write(STUDY_URL_TAIL, at, 'latin1');
          entry = { studyUid: row.study_uid, memory, start: offset, end: urlEnd + restLength, urlAt, head: headBytes, urlEnd, rev: Number(row.rev), block, used: false };
        } else {
          const urlAt = studyResultUrlAt(row, written);
          entry = { studyUid: row.study_uid, memory, start: offset, end: offset + written, urlAt: urlAt < 0 ? -1 : offset + urlAt, rev: Number(row.rev), block, used: false };
        }
        memory[entry.end] = 0x2c; // ,
        offset = entry.end + 1;
        out.push(entry);
        if (kept) this.keep(Number(row.id), entry);
      }
      first = end;
    }
    this.evict();
    return out;
  }

  /** The bytes of a RetrieveURL head, one object per head (results finished with it are recognised by it); undefined past a few heads. */
  private headBytes(head: string): Buffer | undefined {
    let bytes = this.heads.get(head);
    if (!bytes && this.heads.size < MAX_HEADS) {
      bytes = Buffer.from(head, 'utf8');
      this.heads.set(head, bytes);
    }
    return bytes;
  }

  /**
   * Whether recent pages found three in four of their results kept, or more. Measured at 1M
   * instances on random 30-day pages while the cache filled: reading ids first from half a
   * share of hits on cost ~1-2 ms more server CPU per page than from three quarters on.
   */
  expectsHits(): boolean {
    return this.missShare < 0.25;
  }

  /** Notes how many of a page's results were not kept, and how many texts were read for it. */
  notePage(results: number, missed: number, textsRead: number): void {
    this.counters.textsRead += textsRead;
    if (results > 0) this.missShare = 0.8 * this.missShare + (0.2 * missed) / results;
  }

  stats(): StudyResultCacheStats {
    return { ...this.counters, entries: this.entries.size, maxBytes: this.maxBytes };
  }

  private keep(id: number, entry: Entry): void {
    const old = this.entries.get(id);
    if (old) this.forget(id, old);
    this.entries.set(id, entry);
    if (entry.block.kept++ === 0) this.counters.bytes += entry.block.size;
    this.counters.bytes += entryBytes(entry);
  }

  private forget(id: number, entry: Entry): void {
    this.entries.delete(id);
    if (--entry.block.kept === 0) this.counters.bytes -= entry.block.size;
    this.counters.bytes -= entryBytes(entry);
  }

  private evict(): void {
    // Map keeps insertion order: the oldest entries come first, an entry set again comes last
    // (and is met again, unmarked, if the others do not free enough).
    for (const [id, entry] of this.entries) {
      if (this.counters.bytes <= this.maxBytes) break;
      if (entry.used) {
        entry.used = false;
        this.entries.delete(id);
        this.entries.set(id, entry);
        continue;
      }
      this.forget(id, entry);
      this.counters.evictions++;
    }
  }
}

function entryBytes(result: StudyResultBytes): number {
  return 2 * result.studyUid.length + ENTRY_OVERHEAD_BYTES;
}

/**
 * The results of a study page by date (isPreparedPage) in result order. While recent pages found
 * nearly all their results kept (expectsHits): the page's ids and revisions first, then the texts of the studies
 * not kept at those revisions (the same page, cut to their ids), which the cache keeps. A study
 * deleted between the two reads is left out (as if the search had run after the delete); one
 * changed meanwhile is answered with its newer text. Otherwise (a cold cache, or pages of more
 * studies than it holds) the page is read whole, texts included, in one statement, and the
 * texts not kept are kept: measured at 1M instances on 30-day pages that were never asked
 * before, the two reads cost ~4 ms more server CPU per page than the uncached path.
 */
export async function readStudyPage(knex: Knex, search: QidoSearch, plan: StudyJsonPlan, cache: StudyResultCache): Promise<{ results: StudyResultBytes[]; more: boolean }> {
  if (!cache.expectsHits()) {
    const { rows, more } = await findQidoStudyPageVersions(knex, search, plan);
    const results: StudyResultBytes[] = new Array(rows.length);
    const fresh: StudyJsonVersion[] = [];
    const freshAt: number[] = [];
    for (let i = 0; i < rows.length; i++) {
      const kept = cache.get(rows[i].id, rows[i].rev);
      if (kept) {
        results[i] = kept;
      } else {
        fresh.push(rows[i]);
        freshAt.push(i);
      }
    }
    const made = cache.add(fresh, studyResultUrlHead(plan));
    for (let k = 0; k < made.length; k++) results[freshAt[k]] = made[k];
    cache.notePage(rows.length, fresh.length, rows.length);
    return { results, more };
  }
  const { ids, revs, more } = await findQidoStudyPageKeys(knex, search);
  const results: Array<StudyResultBytes | undefined> = new Array(ids.length);
  const missing: string[] = [];
  for (let i = 0; i < ids.length; i++) {
    const hit = cache.get(ids[i], revs[i]);
    if (hit) results[i] = hit;
    else missing.push(String(ids[i]));
  }
  if (missing.length === 0) {
    cache.notePage(ids.length, 0, 0);
    return { results: results as StudyResultBytes[], more };
  }
  const rows = await findQidoStudyPageTexts(knex, search, plan, missing);
  cache.notePage(ids.length, missing.length, rows.length);
  const made = cache.add(rows, studyResultUrlHead(plan));
  const read = new Map<number, StudyResultBytes>();
  for (let i = 0; i < rows.length; i++) read.set(Number(rows[i].id), made[i]);
  const out: StudyResultBytes[] = [];
  for (let i = 0; i < ids.length; i++) {
    const result = results[i] ?? read.get(ids[i]);
    if (result) out.push(result);
  }
  return { results: out, more };
}
