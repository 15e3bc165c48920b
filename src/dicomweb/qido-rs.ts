/**
 * Search Transaction, QIDO-RS (PS3.18 10.6): SearchForStudies, SearchForSeries and
 * SearchForInstances over the index. Answers come from indexed columns and the stored JSONB
 * datasets only; blobs are never read.
 */
import type { Knex } from 'knex';
import type { Database } from '../db/database';
import { isRetryableDbError } from '../db/database';
import { findQidoRows, findQidoStudyJson, isPreparedPage, type QidoCondition, type QidoLevel, type QidoSearch } from '../db/qido-search';
import type { DicomJson } from '../dicom/types';
import { ServiceUnavailableError } from '../http/errors';
import { searchDeidentified } from './deid-qido';
import type { DeidView } from './deid-view';
import { findMatchKey } from './query-keys';
import { parseQidoQuery, type QidoQuery } from './query-params';
import {
  buildResult,
  datasetSelections,
  planReturn,
  planStudyJson,
  studyResultRows,
  writeStudyResultBytes,
  writeStudyResultBytesFrom,
  writeStudyResults,
  type ByteBuffers,
  type ReturnPlan,
} from './query-results';
import { readStudyPage, type StudyResultCache } from './study-result-cache';

/** What QIDO-RS needs from the rest of the server. */
export interface SearchServices {
  db: Database;
  /** Study results kept between requests for the study list by date; absent: read every time. */
  studyResults?: StudyResultCache;
}

/** One search request, transport-neutral. */
export interface SearchRequest {
  /** Query parameters; a repeated parameter has an array of values. */
  query: Record<string, unknown>;
  /** Target resource `/studies/{study}/...`, if any. */
  studyInstanceUID?: string;
  /** Target resource `/studies/{study}/series/{series}/instances`, if any. */
  seriesInstanceUID?: string;
  /** Base of RetrieveURLs, e.g. `http://host:8080/dicomweb`. */
  dicomwebBaseUrl: string;
}

/** Options a caller (e.g. the access policy) adds to any search. */
export interface SearchOptions {
  /** Narrows the visible studies; called with a builder over the unaliased `studies` table. */
  restrictStudies?: (qb: Knex.QueryBuilder) => void;
  /** A researcher's de-identified view (PS3.15 Annex E): keys translated, results de-identified. */
  deid?: DeidView;
}

/** The search response: always 200 with a (possibly empty) array, plus Warning texts. */
export interface SearchResponse {
  status: 200;
  /** The results (parsed from `json` on first read when the database wrote them as text). */
  readonly body: DicomJson[];
  /** The results as DICOM JSON text, when the database wrote them (built on first read). */
  readonly json?: string;
  /** Writes the UTF-8 bytes of `json` into a buffer from `buffers` (qido-routes.ts sends them as they are), when the database wrote the results. */
  writeBytes?(buffers: ByteBuffers): { buffer: Buffer; length: number };
  warnings: string[];
}

/** The text PS3.18 8.3.4.4 gives for a response cut short by the server's limit. */
export const MORE_RESULTS_WARNING = 'There are additional results that can be requested';

/** Search for Studies (PS3.18 10.6, `/studies`). */
export function searchForStudies(services: SearchServices, req: SearchRequest, options: SearchOptions = {}): Promise<SearchResponse> {
  return search(services, 'study', req, options);
}

/** Search for Series (`/series`, `/studies/{study}/series`). */
export function searchForSeries(services: SearchServices, req: SearchRequest, options: SearchOptions = {}): Promise<SearchResponse> {
  return search(services, 'series', req, options);
}

/** Search for Instances (`/instances`, `/studies/{study}/instances`, `/studies/{study}/series/{series}/instances`). */
export function searchForInstances(services: SearchServices, req: SearchRequest, options: SearchOptions = {}): Promise<SearchResponse> {
  return search(services, 'instance', req, options);
}

/** A request turned into a database search and a return plan, before anything runs. */
export interface PreparedSearch {
  search: QidoSearch;
  plan: ReturnPlan;
  query: QidoQuery;
}

/** Parses a request into the search the database will run (exported for EXPLAIN checks). */
export function prepareSearch(level: QidoLevel, req: SearchRequest, options: SearchOptions = {}): PreparedSearch {
  const query = parseQidoQuery(req.query, level);
  const scope = req.seriesInstanceUID !== undefined ? 'series' : req.studyInstanceUID !== undefined ? 'study' : 'all';
  const conditions: QidoCondition[] = [...query.conditions];
  if (req.studyInstanceUID !== undefined) conditions.push(pathCondition('0020000D', req.studyInstanceUID));
  if (req.seriesInstanceUID !== undefined) conditions.push(pathCondition('0020000E', req.seriesInstanceUID));
  const plan = planReturn(level, scope, query.returnTags, query.includeAll);
  const search: QidoSearch = {
    level,
    scope,
    conditions,
    limit: query.limit,
    offset: query.offset,
    datasets: datasetSelections(plan),
    restrictStudies: options.restrictStudies,
  };
  return { search, plan, query };
}

async function search(services: SearchServices, level: QidoLevel, req: SearchRequest, options: SearchOptions): Promise<SearchResponse> {
  const prepared = prepareSearch(level, req, options);
  const { search: spec, plan, query } = prepared;
  if (options.deid) {
    try {
      return await searchDeidentified(services, prepared, req.dicomwebBaseUrl, options.deid, (offset) => `${MORE_RESULTS_WARNING} (offset=${offset})`);
    } catch (err) {
      if (isRetryableDbError(err)) throw new ServiceUnavailableError('the index database is unavailable');
      throw err;
    }
  }
  try {
    // Study results are written as DICOM JSON by the database: no dataset is parsed or rebuilt here.
    if (level === 'study') return await searchStudiesAsJson(services, prepared, req.dicomwebBaseUrl);
    const found = await findQidoRows(services.db.knex, spec);
    const body = found.rows.map((row) => buildResult(row, plan, req.dicomwebBaseUrl));
    return { status: 200, body, warnings: pagingWarnings(query, found.more, found.rows.length) };
  } catch (err) {
    if (isRetryableDbError(err)) throw new ServiceUnavailableError('the index database is unavailable');
    throw err;
  }
}

async function searchStudiesAsJson(services: SearchServices, prepared: PreparedSearch, baseUrl: string): Promise<SearchResponse> {
  const plan = planStudyJson(prepared.plan, baseUrl);
  const cache = services.studyResults;
  if (cache && isPreparedPage(prepared.search, plan)) {
    // The study list by date: texts kept from earlier pages at the same revisions are not read again.
    const page = await readStudyPage(services.db.knex, prepared.search, plan, cache);
    return studyJsonResponse(
      () => writeStudyResults(studyResultRows(page.results), plan),
      (buffers) => writeStudyResultBytesFrom(page.results, plan, buffers),
      pagingWarnings(prepared.query, page.more, page.results.length),
    );
  }
  const found = await findQidoStudyJson(services.db.knex, prepared.search, plan);
  return studyJsonResponse(
    () => writeStudyResults(found.rows, plan),
    (buffers) => writeStudyResultBytes(found.rows, plan, buffers),
    pagingWarnings(prepared.query, found.more, found.rows.length),
  );
}

/** A study search's answer from its writers: the bytes that are sent, the text and the parsed body built on first read. */
function studyJsonResponse(write: () => string, writeBytes: NonNullable<SearchResponse['writeBytes']>, warnings: string[]): SearchResponse {
  let json: string | undefined;
  let parsed: DicomJson[] | undefined;
  const text = () => (json ??= write());
  return {
    status: 200,
    writeBytes,
    get json() {
      return text();
    },
    get body() {
      return (parsed ??= JSON.parse(text()) as DicomJson[]);
    },
    warnings,
  };
}

function pagingWarnings(query: QidoQuery, more: boolean, returned: number): string[] {
  const warnings = [...query.warnings];
  if (more && query.serverLimited) warnings.push(`${MORE_RESULTS_WARNING} (offset=${query.offset + returned})`);
  return warnings;
}

function pathCondition(tag: string, uid: string): QidoCondition {
  const key = findMatchKey(tag);
  if (!key) throw new Error(`no match key for ${tag}`);
  return { column: key.column, anyOf: [{ type: 'equal', value: uid }] };
}
