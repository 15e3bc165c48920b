import type { Knex } from 'knex';
import type { AccessFilter } from './access';
import { queryRows } from './raw';

/**
 * The ids among `ids` (current rows of `resourceType`) that `filter` does not pass, as the rows
 * stand now in `db`: inside a write's transaction, before its change or after it. One statement
 * for any number of ids, so a transaction Bundle checks each type at once.
 */
export async function idsOutside(db: Knex | Knex.Transaction, filter: AccessFilter, resourceType: string, ids: readonly string[]): Promise<string[]> {
  const unique = [...new Set(ids)];
  if (unique.length === 0) return [];
  const f = filter('r');
  const inside = await queryRows<{ id: string }>(
    db,
    `SELECT r.id FROM fhir_resource r WHERE r.resource_type = ? AND r.id = ANY(?::text[]) AND NOT r.deleted AND (${f.sql})`,
    [resourceType, unique, ...f.bindings],
  );
  const passed = new Set(inside.map((row) => row.id));
  return unique.filter((id) => !passed.has(id));
}
