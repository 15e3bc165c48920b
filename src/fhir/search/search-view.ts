import type { Knex } from 'knex';
import type { StoredResource } from '../store/resource-store';
import type { AccessFilter } from '../store/access';
import type { SearchRequest } from './search-request';

/**
 * A view that changes what a caller sees of the resources (e.g. de-identified: shifted dates,
 * no names) must also change what the caller may search on, or a search would answer about
 * values the caller never sees (FHIR R4 search 3.1.1: matching is on the resource as served).
 * The search service asks the view to prepare every search, conditional matches included.
 */
export interface SearchView {
  /** Checks (400 on a parameter the view cannot honour), rewrites, and plans one search. */
  prepare(db: Knex | Knex.Transaction, req: SearchRequest, access?: AccessFilter): Promise<PreparedSearch>;
}

/** What runs in SQL, and what keeps the matches exactly when SQL can only over-approximate. */
export interface PreparedSearch {
  /** The search to run; a superset of the answer when `postFilter` is set. */
  request: SearchRequest;
  /** Keeps, in order, the candidates that really match as the caller sees them. */
  postFilter?: (db: Knex | Knex.Transaction, candidates: StoredResource[]) => Promise<StoredResource[]>;
}
