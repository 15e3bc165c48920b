import type { Principal } from '../../../src/auth/principal';
import { writeFilterFor } from '../../../src/auth/request-access';
import { parseScopes } from '../../../src/auth/scopes';

const ICD10 = 'http://hl7.org/fhir/sid/icd-10-cm';

function admin(scope: string): Principal {
  return { subject: 'u-admin', role: 'admin', scopes: parseScopes(scope), scopeText: scope, projects: [], issuer: 'http://il.test', source: 'local', expiresAt: 0 };
}

/** The SQL of a filter over alias `r`, or undefined when there is no filter. */
const sqlOf = (scope: string, type: string, interaction: 'create' | 'update' | 'delete') => writeFilterFor(admin(scope), [], type, interaction)?.('r');

describe('writeFilterFor: the rows granular scopes let a write change (SMART 2.2)', () => {
  test('an unrestricted scope for the letter narrows nothing', () => {
    expect(sqlOf('user/Condition.cud', 'Condition', 'create')).toBeUndefined();
    expect(sqlOf('user/*.cud', 'Condition', 'delete')).toBeUndefined();
  });

  test('a granular scope compiles to its search, on the written type only', () => {
    const f = sqlOf(`user/Condition.cu?code=${ICD10}|H40.11`, 'Condition', 'update');
    expect(f).toBeDefined();
    expect(f!.sql).not.toBe('FALSE');
    expect(f!.bindings).toContain('Condition');
    expect(f!.bindings).toContain('H40.11');
  });

  test('the scopes giving the letter are a union; one without parameters lifts them', () => {
    const union = sqlOf(`user/Condition.c?code=${ICD10}|H40.11 user/Condition.c?code=E11.9`, 'Condition', 'create');
    expect(union!.bindings).toEqual(expect.arrayContaining(['H40.11', 'E11.9']));
    expect(union!.sql).toMatch(/ OR /);
    expect(sqlOf(`user/Condition.c?code=${ICD10}|H40.11 user/Condition.c`, 'Condition', 'create')).toBeUndefined();
  });

  test('a scope without the letter lends its parameters to no write', () => {
    // Only the c scope is restricted; u is unrestricted, d is not granted at all.
    const scope = `user/Condition.c?code=${ICD10}|H40.11 user/Condition.u`;
    expect(sqlOf(scope, 'Condition', 'create')!.bindings).toContain('H40.11');
    expect(sqlOf(scope, 'Condition', 'update')).toBeUndefined();
    expect(sqlOf(scope, 'Condition', 'delete')!.sql).toBe('FALSE');
  });

  test("a * scope's parameters apply to every type; where they cannot be evaluated they grant nothing", () => {
    expect(sqlOf(`user/*.c?code=${ICD10}|H40.11`, 'Condition', 'create')!.bindings).toContain('H40.11');
    expect(sqlOf(`user/*.c?code=${ICD10}|H40.11`, 'Patient', 'create')!.sql).toBe('FALSE');
    expect(sqlOf('user/Condition.c?no-such-parameter=1', 'Condition', 'create')!.sql).toBe('FALSE');
  });

  test('types no scope governs (conformance resources) are not narrowed', () => {
    expect(sqlOf(`user/Condition.cud?code=${ICD10}|H40.11`, 'StructureDefinition', 'create')).toBeUndefined();
  });
});
