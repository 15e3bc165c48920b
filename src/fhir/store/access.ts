/**
 * Row-level security seam: a filter the caller's policy builds and every read, search,
 * include and history query ANDs onto the resource table (alias given). Absent = no filter.
 * Example (projects, later): (a) => ({ sql: `${a}.project_id = ANY(?)`, bindings: [projects] }).
 */
export type AccessFilter = (alias: string) => { sql: string; bindings: unknown[] };

/** The WHERE fragment of an access filter, or a neutral one. */
export function accessSql(access: AccessFilter | undefined, alias: string): { sql: string; bindings: unknown[] } {
  if (!access) return { sql: 'TRUE', bindings: [] };
  const f = access(alias);
  return { sql: `(${f.sql})`, bindings: f.bindings };
}
