import { formatScope, grantScopes, parseScope, parseScopes, scopeCovers } from '../../../src/auth/scopes';

describe('SMART scopes', () => {
  test('parses a v2 scope', () => {
    const s = parseScope('user/ImagingStudy.rs')!;
    expect(s.context).toBe('user');
    expect(s.resourceType).toBe('ImagingStudy');
    expect([...s.permissions].sort()).toEqual(['r', 's']);
    expect(s.params).toEqual({});
  });

  test.each([
    ['patient/Observation.read', ['r', 's']],
    ['user/Observation.write', ['c', 'd', 'u']],
    ['system/*.*', ['c', 'd', 'r', 's', 'u']],
  ])('parses v1 %s', (raw, perms) => {
    expect([...parseScope(raw)!.permissions].sort()).toEqual(perms);
  });

  test('parses granular search parameters', () => {
    const s = parseScope('user/Condition.rs?code=http://hl7.org/fhir/sid/icd-10-cm|H40')!;
    expect(s.params).toEqual({ code: 'http://hl7.org/fhir/sid/icd-10-cm|H40' });
  });

  test.each(['user/Patient.sr', 'user/Patient.rr', 'user/patient.rs', 'openid', 'fhirUser', 'user/Patient.read?x=1', 'user/Patient.rs?', 'user/Patient.rs?x'])(
    'rejects %s',
    (raw) => {
      expect(parseScope(raw)).toBeNull();
    },
  );

  test('parseScopes skips non-resource scopes', () => {
    expect(parseScopes('openid fhirUser system/*.rs').map((s) => s.raw)).toEqual(['system/*.rs']);
  });

  test('formats v1 input as v2', () => {
    expect(formatScope(parseScope('system/Patient.read')!)).toBe('system/Patient.rs');
  });

  test('a wildcard covers a type; a filter does not cover the unfiltered scope', () => {
    expect(scopeCovers(parseScope('system/*.cruds')!, parseScope('system/Patient.rs')!)).toBe(true);
    expect(scopeCovers(parseScope('system/Condition.rs?code=x')!, parseScope('system/Condition.rs')!)).toBe(false);
  });

  test('grantScopes narrows a request to what the client may hold', () => {
    expect(grantScopes('system/*.cruds', ['system/ImagingStudy.rs', 'system/Patient.r'])).toEqual(['system/ImagingStudy.rs', 'system/Patient.r']);
    expect(grantScopes('system/Patient.rs', ['system/*.rs'])).toEqual(['system/Patient.rs']);
    expect(grantScopes('system/Patient.cud', ['system/*.rs'])).toEqual([]);
    expect(grantScopes('user/*.rs', ['system/*.rs'])).toEqual([]);
  });
});
