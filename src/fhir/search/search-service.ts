import type { Knex } from 'knex';
import type { Bundle, BundleEntry, BundleLink, Resource } from '@medplum/fhirtypes';
import type { FhirDefinitions } from '../definitions';
import { outcome } from '../outcome';
import { accessSql, type AccessFilter } from '../store/access';
import { toStored, type StoredResource } from '../store/resource-store';
import { firstRoundSql, resolveIncludes } from './includes';
import { buildSearchSql, withPageParts, type Sql } from './search-sql';
import type { DeferredRefresh } from '../http/fhir-request';
import { parseSearchRequest, type SearchRequest } from './search-request';
import { applyElements, applySummary } from './subset';
import { queryRows } from '../store/raw';
import type { SearchView } from './search-view';
import { fhirError } from '../outcome';

/** What a search needs from its caller. */
export interface SearchContext {
  db: Knex | Knex.Transaction;
  defs: FhirDefinitions;
  baseUrl: string;
  access?: AccessFilter;
  /** The caller's view of the resources (de-identified for researchers): checks and plans every search. */
  searchView?: SearchView;
  /** A refresh of derived resources left to this search: checked in the page statement, run (and the search repeated) when due. */
  deferredRefresh?: DeferredRefresh;
}

/** Candidates a post-filtered search may scan; a broader search is refused (narrow it). */
export const POST_FILTER_LIMIT = 10_000;

/** A page of matches; `firstRound` holds what each include rule found from them, when they were read together. */
interface Matches {
  matches: StoredResource[];
  more: boolean;
  total?: number;
  firstRound?: StoredResource[][];
}

/**
 * Runs the page query (one row past the page, to know whether there is a next page) and the
 * count when asked. With `withIncludes`, the first round of the request's `_include` and
 * `_revinclude` is read in the same statement (one round trip less).
 */
export async function findMatches(ctx: SearchContext, req: SearchRequest, options: { withIncludes?: boolean } = {}): Promise<Matches> {
  const deferred = ctx.deferredRefresh;
  if (deferred && (ctx.searchView || req.summary === 'count' || req.count === 0 || req.total === 'accurate')) {
    // These run other statements first (a count has its own snapshot, which must not predate the
    // refresh), or no page statement: refresh before, as other requests do.
    await deferred.refresh();
    return findMatches({ ...ctx, deferredRefresh: undefined }, req, options);
  }
  if (ctx.searchView) {
    const prepared = await ctx.searchView.prepare(ctx.db, req, ctx.access);
    if (prepared.postFilter) return findPostFiltered(ctx, req, prepared.request, prepared.postFilter);
    req = prepared.request;
  }
  const sql = buildSearchSql(req, accessSql(ctx.access, 'r'), { baseUrl: ctx.baseUrl });
  const wantsTotal = req.total === 'accurate' || req.summary === 'count';
  const total = wantsTotal ? Number((await queryRows(ctx.db, sql.count.sql, sql.count.bindings))[0].total) : undefined;
  if (req.summary === 'count' || req.count === 0) return { matches: [], more: false, total };
  const parts = options.withIncludes ? firstRoundSql(ctx.defs, req, ctx.access) : [];
  // The refresh check is the last part: a row when there is something to refresh.
  const statement = withPageParts(sql.page, deferred ? [...parts, refreshCheckSql(deferred)] : parts);
  const rows = await queryRows(ctx.db, statement.sql, statement.bindings);
  const byPart: Array<Record<string, any>[]> = [[], ...parts.map(() => []), []];
  for (const row of rows) byPart[Number(row.part ?? 0)].push(row);
  if (byPart[parts.length + 1].length > 0 && deferred) {
    await deferred.refresh();
    return findMatches({ ...ctx, deferredRefresh: undefined }, req, options);
  }
  const [page, ...included] = byPart.slice(0, parts.length + 1);
  const more = page.length > req.count;
  return { matches: page.slice(0, req.count).map(toStored), more, total, firstRound: options.withIncludes ? included.map((list) => list.map(toStored)) : undefined };
}

/** One row, in the columns of a page part, when the deferred refresh is due. */
function refreshCheckSql(deferred: DeferredRefresh): Sql {
  return {
    sql:
      'SELECT NULL::bigint AS rid, NULL::text AS resource_type, NULL::text AS id, NULL::integer AS version_id, ' +
      `NULL::timestamptz AS last_updated, NULL::boolean AS deleted, NULL::jsonb AS content WHERE ${deferred.sql}`,
    bindings: [],
  };
}

/**
 * A search SQL can only over-approximate (values the caller sees transformed): every candidate
 * is fetched, filtered exactly, then paged, so _count, _offset, next links and _total stay honest.
 */
async function findPostFiltered(
  ctx: SearchContext,
  req: SearchRequest,
  wide: SearchRequest,
  postFilter: NonNullable<Awaited<ReturnType<SearchView['prepare']>>['postFilter']>,
): Promise<Matches> {
  const sql = buildSearchSql({ ...wide, count: POST_FILTER_LIMIT, offset: 0 }, accessSql(ctx.access, 'r'), { baseUrl: ctx.baseUrl });
  const rows = await queryRows(ctx.db, sql.page.sql, sql.page.bindings);
  if (rows.length > POST_FILTER_LIMIT) {
    throw fhirError(400, 'too-costly', `This search must be checked on more than ${POST_FILTER_LIMIT} candidates as you see them (shifted dates); narrow it with other parameters`);
  }
  const kept = await postFilter(ctx.db, rows.map(toStored));
  const wantsTotal = req.total === 'accurate' || req.summary === 'count';
  const total = wantsTotal ? kept.length : undefined;
  if (req.summary === 'count' || req.count === 0) return { matches: [], more: false, total };
  return { matches: kept.slice(req.offset, req.offset + req.count), more: kept.length > req.offset + req.count, total };
}

/** Ids of the resources a conditional interaction's query selects (at most `limit`). */
export async function findConditionalMatches(
  ctx: SearchContext,
  resourceType: string,
  query: Record<string, string[]>,
  limit = 2,
): Promise<StoredResource[]> {
  // Conditional interactions must not silently drop criteria: unknown parameters are errors here.
  const req = parseSearchRequest(ctx.defs, resourceType, query, { strict: true });
  req.count = limit;
  req.offset = 0;
  req.sort = [];
  return (await findMatches(ctx, req)).matches;
}

function searchUrl(baseUrl: string, req: SearchRequest, offset: number): string {
  const params = new URLSearchParams();
  for (const [k, v] of req.applied) params.append(k, v);
  params.set('_count', String(req.count));
  if (offset > 0) params.set('_offset', String(offset));
  return `${baseUrl}/${req.resourceType}?${params.toString()}`;
}

/** A search as a searchset Bundle with self/next/previous links (FHIR R4 3.1.1.5.6 paging). */
export async function searchToBundle(ctx: SearchContext, req: SearchRequest): Promise<Bundle> {
  const { matches, more, total, firstRound } = await findMatches(ctx, req, { withIncludes: true });
  const included = await resolveIncludes(ctx.db, ctx.defs, matches, req.includes, req.revincludes, ctx.access, firstRound);
  const shape = (r: Resource): Resource => {
    if (req.elements?.length) return applyElements(r, req.elements);
    if (req.summary === 'true' || req.summary === 'text' || req.summary === 'data') return applySummary(ctx.defs, r, req.summary);
    return r;
  };
  const entry: BundleEntry[] = [];
  for (const m of matches) entry.push({ fullUrl: `${ctx.baseUrl}/${m.resourceType}/${m.id}`, resource: shape(m.content as Resource), search: { mode: 'match' } });
  for (const m of included) entry.push({ fullUrl: `${ctx.baseUrl}/${m.resourceType}/${m.id}`, resource: shape(m.content as Resource), search: { mode: 'include' } });
  if (req.ignored.length > 0) {
    const oo = outcome('warning', 'not-supported', `Ignored search parameters: ${req.ignored.map((i) => `${i.name} (${i.reason})`).join('; ')}`);
    entry.push({ resource: oo, search: { mode: 'outcome' } });
  }
  const link: BundleLink[] = [{ relation: 'self', url: searchUrl(ctx.baseUrl, req, req.offset) }];
  if (req.summary !== 'count') {
    if (req.offset > 0) link.push({ relation: 'previous', url: searchUrl(ctx.baseUrl, req, Math.max(0, req.offset - req.count)) });
    if (more) link.push({ relation: 'next', url: searchUrl(ctx.baseUrl, req, req.offset + req.count) });
  }
  const bundle: Bundle = { resourceType: 'Bundle', type: 'searchset', link, entry };
  if (total !== undefined) bundle.total = total;
  return bundle;
}
