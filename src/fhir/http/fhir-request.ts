import type { Knex } from 'knex';
import type { Resource } from '@medplum/fhirtypes';
import type { FhirDefinitions } from '../definitions';
import type { ResourceRules } from '../resources/resource-rules';
import type { AccessFilter } from '../store/access';

/** A FHIR HTTP request with nothing of express in it (STYLE 3). */
export interface FhirRequest {
  method: string;
  /** Path below the FHIR base, starting with '/': '/Patient/123/_history/2'. */
  path: string;
  /** Query parameters; a repeated key keeps every value in order. */
  query: Record<string, string[]>;
  /** Header values by lower-case name. */
  headers: Record<string, string | undefined>;
  /** Parsed JSON body, or form fields for POST _search. */
  body?: unknown;
  /**
   * Batch entries the access policy refused (by entry index, with the reason): each answers 403
   * on its own while the other entries run (FHIR R4 3.1.0.11: batch entries are independent).
   */
  entryDenials?: ReadonlyMap<number, string>;
}

/** The answer: status, headers and an optional resource body. */
export interface FhirResponse {
  status: number;
  headers: Record<string, string>;
  body?: Resource;
}

/** The writes granular scopes govern, by the SMART permission they need: c, u and d. */
export type WriteInteraction = 'create' | 'update' | 'delete';

/** What every handler runs with. */
export interface FhirContext {
  /** Root knex, for starting transactions. */
  knex: Knex;
  /** Where reads and searches run: the root knex, or the enclosing transaction of a transaction Bundle. */
  db: Knex | Knex.Transaction;
  /** Set inside a transaction Bundle: writes join it instead of opening their own. */
  trx?: Knex.Transaction;
  defs: FhirDefinitions;
  /** The externally visible FHIR base URL, e.g. https://host/fhir. */
  baseUrl: string;
  /** Row-level security filter for reads and searches (seam for projects). */
  access?: AccessFilter;
  /**
   * The rows the caller may change by a write `interaction` on `resourceType`, when its granular
   * scopes narrow them (SMART App Launch 2.2 `user/Condition.cu?code=...`): the stored row before
   * an update or delete, and the written row after a create or update, must pass it, or the
   * write is refused (403) and rolled back. Undefined: not narrowed.
   */
  writeAccess?: (resourceType: string, interaction: WriteInteraction) => AccessFilter | undefined;
  /**
   * The rows a search by the caller sees (its read scopes), for the search a conditional create,
   * update or delete makes: a write must not find, and answer with, what its token may not read;
   * 'denied' when the token may not search the type (the conditional write is refused).
   * Undefined: `access`.
   */
  searchAccess?: () => AccessFilter | 'denied' | undefined;
  /**
   * Called in the write's transaction for each resource a client request creates (a new id),
   * e.g. to link it to the caller's projects so the row filter lets its creator read it.
   */
  onCreate?: (trx: Knex.Transaction, resourceType: string, id: string) => Promise<void>;
  /**
   * For a caller who reads some elements masked: the resource it writes, with the stored values
   * back where it sent the mask (src/fhir/deid/field-mask.ts). Absent: written as sent.
   */
  keepMasked?: (incoming: Resource, stored: Resource | null | undefined) => Resource;
  /** The projects the caller's rows are confined to; undefined: every project (types served elsewhere, such as the audit trail, filter by them). */
  projects?: readonly string[];
  /** Clock (tests may pin it). */
  now(): Date;
  /**
   * Resource types served by another store (e.g. AuditEvent from the audit trail): every
   * request on `/<Type>...` goes to that handler instead of the generic store.
   */
  typeHandlers?: Readonly<Record<string, FhirTypeHandler>>;
  /** Per-type rules checked on every client write and by $validate (ICD-10-CM codes, Group members); default: the shipped code lists. */
  resourceRules?: ResourceRules;
  /** Set on a search whose refresh of derived resources was left to the search itself. */
  deferredRefresh?: DeferredRefresh;
}

/**
 * A refresh of derived resources (e.g. pending ImagingStudy rewrites) that a search checks in
 * its own page statement instead of in a round trip before it: `sql` is a condition, true when
 * there is something to refresh; the search then calls `refresh` and runs again.
 */
export interface DeferredRefresh {
  sql: string;
  refresh(): Promise<void>;
}

/** Serves every interaction on one resource type from elsewhere (see FhirContext.typeHandlers). */
export type FhirTypeHandler = (ctx: FhirContext, req: FhirRequest) => Promise<FhirResponse>;

/** Parses a query string ('a=1&a=2&b=x') into repeatable parameters. */
export function parseQueryString(text: string): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  const params = new URLSearchParams(text.startsWith('?') ? text.slice(1) : text);
  for (const [k, v] of params) (out[k] ??= []).push(v);
  return out;
}

/** The Prefer header preferences we honour (FHIR R4 http 3.1.0.4.4, search 3.1.1.5.9). */
export interface Preferences {
  return?: 'minimal' | 'representation' | 'OperationOutcome';
  handling?: 'strict' | 'lenient';
}

/** Parses `Prefer: return=minimal, handling=strict`. */
export function parsePrefer(header: string | undefined): Preferences {
  const prefs: Preferences = {};
  for (const part of (header ?? '').split(/[,;]/)) {
    const [k, v] = part.split('=').map((s) => s?.trim().replace(/^"|"$/g, ''));
    if (k === 'return' && (v === 'minimal' || v === 'representation' || v === 'OperationOutcome')) prefs.return = v;
    if (k === 'handling' && (v === 'strict' || v === 'lenient')) prefs.handling = v;
  }
  return prefs;
}

/** The version in an ETag or If-Match value: W/"3", "3" or 3. */
export function parseETagVersion(value: string | undefined): number | undefined {
  if (!value) return undefined;
  const m = /^(?:W\/)?"?(\d+)"?$/.exec(value.trim());
  return m ? Number(m[1]) : Number.NaN;
}

/** The weak ETag of a version. */
export const etagOf = (versionId: number) => `W/"${versionId}"`;
