import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { Resource } from '@medplum/fhirtypes';
import { loadFhirDefinitions } from './definitions';
import { parseQueryString } from './http/fhir-request';
import { findConditionalMatches } from './search/search-service';
import { applyWrites, prepareWrite } from './store/resource-writer';
import { readCurrent, type StoredResource } from './store/resource-store';
import { checkIfMatch } from './interactions';
import { assertResourceShape, assertValidResource } from './validation';

/** Options of {@link writeResourceInTransaction}. */
export interface WriteResourceOptions {
  /** Validate against R4 (and claimed fhir-profiles/ profiles) first; default true. A failure throws a 422 OperationOutcomeError. */
  validate?: boolean;
  /** Expected current version (If-Match); a different one throws a 412 OperationOutcomeError. */
  ifMatch?: number;
  /** Clock (tests). */
  now?: Date;
}

/** What was written. */
export interface WriteResourceResult {
  resource: Resource;
  created: boolean;
  versionId: number;
  lastUpdated: string;
}

/**
 * Creates or updates one resource inside the caller's transaction: current row, history row and
 * search-index rows, all in `trx` (e.g. the DICOM ingest transaction writing the ImagingStudy
 * derived from a study). Without an id the resource is created under a new UUID; with one it is
 * an update-or-create of that id (a deleted resource is revived with the next version).
 * Server-written types (AuditEvent) are allowed here: this is the server writing.
 */
export async function writeResourceInTransaction(trx: Knex.Transaction, resource: Resource, options: WriteResourceOptions = {}): Promise<WriteResourceResult> {
  const defs = loadFhirDefinitions();
  const shaped = assertResourceShape(defs, resource);
  if (options.validate !== false) assertValidResource(defs, shaped);
  const id = shaped.id ?? randomUUID();
  const existing = shaped.id ? await readCurrent(trx, shaped.resourceType, id, { forUpdate: true }) : undefined;
  checkIfMatch(options.ifMatch, existing, shaped.resourceType, id);
  const w = prepareWrite(defs, { ...shaped, id }, existing, existing ? 'PUT' : 'POST', options.now ?? new Date());
  await applyWrites(trx, [w]);
  return { resource: w.content as Resource, created: !existing || existing.deleted, versionId: w.versionId, lastUpdated: w.lastUpdated };
}

/** Reads the current version of a resource inside a transaction (undefined when absent; `deleted` flags a delete). */
export async function readResourceInTransaction(trx: Knex.Transaction, resourceType: string, id: string): Promise<StoredResource | undefined> {
  return readCurrent(trx, resourceType, id);
}

/** Finds resources by a FHIR search query ('identifier=urn:dicom:uid|1.2.3') inside a transaction; at most `limit`. */
export async function findResourcesInTransaction(trx: Knex.Transaction, resourceType: string, query: string, limit = 2): Promise<StoredResource[]> {
  const defs = loadFhirDefinitions();
  return findConditionalMatches({ db: trx, defs, baseUrl: '' }, resourceType, parseQueryString(query), limit);
}
