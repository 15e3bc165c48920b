import { isAuditWriteFailure } from '../../../src/audit/audit-store';

/**
 * A write that carries its AuditEvent INSERT in its own statement answers 503 only when the audit
 * table failed. knex (the embedded engine's path) puts the whole statement ahead of the database's
 * message, so the statement's text names audit_events whatever went wrong.
 */
describe('isAuditWriteFailure', () => {
  const statement = 'WITH lead AS (INSERT INTO audit_events (id, recorded) VALUES ($1, $2) RETURNING 1), ins AS (INSERT INTO instances ...)';

  test('an error of another table in the same statement is not an audit failure', () => {
    expect(isAuditWriteFailure({ message: `${statement} - refused by a trigger`, code: 'P0001' })).toBe(false);
    expect(isAuditWriteFailure({ message: `${statement} - value too long for type character varying(64)`, code: '22001', table: 'instances' })).toBe(false);
  });

  test('an error the database reports for the audit table is', () => {
    expect(isAuditWriteFailure({ message: `${statement} - relation "audit_events" does not exist`, code: '42P01' })).toBe(true);
    expect(isAuditWriteFailure({ message: 'no partition of relation "audit_events" found for row', code: '23514', table: 'audit_events' })).toBe(true);
    expect(isAuditWriteFailure({ message: 'null value in column "resource" violates not-null constraint', code: '23502', table: 'audit_events_2026_11' })).toBe(true);
  });

  test('anything else is not', () => {
    expect(isAuditWriteFailure(null)).toBe(false);
    expect(isAuditWriteFailure(new Error('connection terminated'))).toBe(false);
  });
});
