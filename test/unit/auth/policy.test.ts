import { decide, scopeRowRules, type Interaction } from '../../../src/auth/policy';
import type { Principal } from '../../../src/auth/principal';
import { defaultScopesForRole, type Role } from '../../../src/auth/roles';
import { parseScopes } from '../../../src/auth/scopes';

function principal(role: Role, projects: string[] = ['p1'], scope = defaultScopesForRole(role).join(' '), facility?: string): Principal {
  return { subject: `u-${role}`, role, scopes: parseScopes(scope), scopeText: scope, projects, facility, issuer: 'http://il.test', source: 'local', expiresAt: 0 };
}

type Row = [Role, string, Interaction, boolean];

/** The role matrix on ImagingStudy (which DICOMweb maps onto), Group (cohorts), Project and AuditEvent. */
const MATRIX: Row[] = [
  ['admin', 'ImagingStudy', 'read', true],
  ['admin', 'ImagingStudy', 'search', true],
  ['admin', 'ImagingStudy', 'create', true],
  ['admin', 'ImagingStudy', 'update', true],
  ['admin', 'ImagingStudy', 'delete', true],
  ['admin', 'ImagingStudy', 'reidentify', true],
  ['admin', 'Server', 'administer', true],
  ['admin', 'AuditEvent', 'search', true],
  ['admin', 'AuditEvent', 'update', false],
  ['admin', 'AuditEvent', 'delete', false],
  ['data-manager', 'ImagingStudy', 'read', true],
  ['data-manager', 'ImagingStudy', 'search', true],
  ['data-manager', 'ImagingStudy', 'create', true],
  ['data-manager', 'ImagingStudy', 'update', true],
  ['data-manager', 'ImagingStudy', 'quarantine', true],
  ['data-manager', 'ImagingStudy', 'delete', false],
  ['data-manager', 'ImagingStudy', 'reidentify', false],
  ['data-manager', 'Project', 'update', true],
  ['data-manager', 'Server', 'administer', false],
  ['data-manager', 'AuditEvent', 'read', false],
  ['researcher', 'ImagingStudy', 'read', true],
  ['researcher', 'ImagingStudy', 'search', true],
  ['researcher', 'ImagingStudy', 'create', false],
  ['researcher', 'ImagingStudy', 'update', false],
  ['researcher', 'ImagingStudy', 'delete', false],
  ['researcher', 'ImagingStudy', 'export', true],
  ['researcher', 'Group', 'create', true],
  ['researcher', 'Group', 'approve', false],
  ['researcher', 'Project', 'approve', false],
  ['researcher', 'ImagingStudy', 'reidentify', false],
  ['researcher', 'AuditEvent', 'search', false],
  ['pi', 'ImagingStudy', 'read', true],
  ['pi', 'ImagingStudy', 'create', false],
  ['pi', 'ImagingStudy', 'delete', false],
  ['pi', 'Group', 'create', true],
  ['pi', 'Group', 'approve', true],
  ['pi', 'ProjectMember', 'approve', true],
  ['pi', 'ImagingStudy', 'reidentify', false],
  ['pi', 'Server', 'administer', false],
];

describe('decide: roles x interactions', () => {
  test.each(MATRIX)('%s %s %s -> %s', (role, resourceType, interaction, allowed) => {
    const d = decide(principal(role, ['p1'], role === 'admin' ? 'user/*.cruds' : 'user/*.cruds'), { resourceType, interaction });
    expect(d.allow).toBe(allowed);
    expect(d.reason).toEqual(expect.any(String));
  });

  test('researchers and PIs get the de-identified view, admin and data managers the identified one', () => {
    const view = (r: Role) => decide(principal(r), { resourceType: 'ImagingStudy', interaction: 'read' }).view;
    expect([view('admin'), view('data-manager'), view('researcher'), view('pi')]).toEqual(['identified', 'identified', 'deidentified', 'deidentified']);
  });

  test('conformance resources are readable by every role without scopes or projects', () => {
    const d = decide(principal('researcher', [], 'user/Group.rs'), { resourceType: 'CapabilityStatement', interaction: 'read' });
    expect(d.allow).toBe(true);
    expect(d.rowFilter.projects).toBe('all');
  });
});

describe('decide: projects (row level)', () => {
  const cases: Array<[Role, string[], string[] | undefined, Interaction, boolean, string[] | 'all' | undefined]> = [
    ['admin', [], undefined, 'read', true, 'all'],
    ['admin', [], ['p9'], 'search', true, ['p9']],
    ['researcher', ['p1', 'p2'], undefined, 'search', true, ['p1', 'p2']],
    ['researcher', ['p1', 'p2'], ['p2'], 'search', true, ['p2']],
    ['researcher', ['p1'], ['p2'], 'search', false, undefined],
    ['researcher', [], undefined, 'read', false, undefined],
    ['data-manager', ['p1'], undefined, 'create', true, ['p1']],
    ['data-manager', ['p1', 'p2'], undefined, 'create', false, undefined],
    ['data-manager', ['p1', 'p2'], ['p2'], 'create', true, ['p2']],
    ['data-manager', ['p1'], ['p3'], 'create', false, undefined],
    ['pi', ['p1'], ['p1'], 'export', true, ['p1']],
  ];
  test.each(cases)('%s in %j asking %j to %s -> %s', (role, projects, projectIds, interaction, allowed, rows) => {
    const d = decide(principal(role, projects, 'user/*.cruds'), { resourceType: 'ImagingStudy', interaction, projectIds });
    expect(d.allow).toBe(allowed);
    if (allowed) expect(d.rowFilter.projects).toEqual(rows);
  });

  test('a facility on the principal narrows the row filter', () => {
    const d = decide(principal('researcher', ['p1'], 'user/*.rs', 'north'), { resourceType: 'ImagingStudy', interaction: 'read' });
    expect(d.rowFilter).toEqual({ projects: ['p1'], facility: 'north' });
  });
});

describe('decide: governance (projects, members, export approvals)', () => {
  const cases: Array<[Role, string, Interaction, boolean]> = [
    ['admin', 'Project', 'create', true],
    ['data-manager', 'Project', 'create', false],
    ['data-manager', 'Project', 'update', true],
    ['researcher', 'Project', 'update', false],
    ['researcher', 'Project', 'read', true],
    ['pi', 'ProjectMember', 'approve', true],
    ['pi', 'ProjectMember', 'delete', true],
    ['data-manager', 'ProjectMember', 'update', true],
    ['data-manager', 'ProjectMember', 'approve', false],
    ['data-manager', 'ProjectMember', 'delete', false],
    ['researcher', 'ProjectMember', 'search', false],
    ['data-manager', 'ProjectStudy', 'update', true],
    ['pi', 'ProjectStudy', 'update', false],
    ['researcher', 'ProjectStudy', 'delete', false],
    ['pi', 'ExportApproval', 'approve', true],
    ['researcher', 'ExportApproval', 'approve', false],
    ['data-manager', 'ExportApproval', 'search', false],
  ];
  test.each(cases)('%s %s %s -> %s', (role, resourceType, interaction, allowed) => {
    expect(decide(principal(role, ['p1', 'p2'], 'user/*.cruds'), { resourceType, interaction }).allow).toBe(allowed);
  });

  test('decided by role, not by FHIR scopes: a PI holding only read scopes approves', () => {
    expect(decide(principal('pi', ['p1'], 'user/*.rs'), { resourceType: 'ProjectMember', interaction: 'approve', projectIds: ['p1'] }).allow).toBe(true);
  });

  test('a token narrowed to some FHIR types governs nothing, whatever its role', () => {
    const narrow = decide(principal('admin', [], 'user/Patient.rs user/Condition.cruds'), { resourceType: 'Project', interaction: 'create' });
    expect(narrow.allow).toBe(false);
    expect(narrow.reason).toMatch(/governance needs a token with an unrestricted/);
    expect(decide(principal('pi', ['p1'], 'user/*.rs?_tag=x'), { resourceType: 'ExportApproval', interaction: 'approve' }).allow).toBe(false);
    expect(decide(principal('admin', [], 'system/*.rs'), { resourceType: 'Project', interaction: 'create' }).allow).toBe(true);
  });

  test('the project the path names must be the caller\'s', () => {
    const d = decide(principal('pi', ['p1'], 'user/*.rs'), { resourceType: 'ProjectMember', interaction: 'approve', projectIds: ['p2'] });
    expect(d.allow).toBe(false);
    expect(d.reason).toMatch(/not a member of project p2/);
  });

  test('a PI of several projects approves exports without naming one (the service checks the export\'s projects)', () => {
    const d = decide(principal('pi', ['p1', 'p2'], 'user/*.rs'), { resourceType: 'ExportApproval', interaction: 'approve' });
    expect(d.allow).toBe(true);
    expect(d.rowFilter.projects).toEqual(['p1', 'p2']);
  });
});

describe('decide: scopes', () => {
  test('the role allows it but no scope does', () => {
    const d = decide(principal('admin', [], 'system/Patient.rs'), { resourceType: 'ImagingStudy', interaction: 'read' });
    expect(d.allow).toBe(false);
    expect(d.reason).toMatch(/no scope grants r on ImagingStudy/);
  });

  test('a scope allows it but the role does not', () => {
    const d = decide(principal('researcher', ['p1'], 'user/*.cruds'), { resourceType: 'ImagingStudy', interaction: 'delete' });
    expect(d.allow).toBe(false);
    expect(d.reason).toMatch(/role researcher may not delete/);
  });

  test('v1 scopes work like their v2 equivalents', () => {
    expect(decide(principal('researcher', ['p1'], 'user/ImagingStudy.read'), { resourceType: 'ImagingStudy', interaction: 'search' }).allow).toBe(true);
    expect(decide(principal('data-manager', ['p1'], 'user/ImagingStudy.read'), { resourceType: 'ImagingStudy', interaction: 'create' }).allow).toBe(false);
  });

  test('patient/ scopes grant nothing without a launch context', () => {
    const d = decide(principal('researcher', ['p1'], 'patient/*.rs'), { resourceType: 'ImagingStudy', interaction: 'read' });
    expect(d.allow).toBe(false);
    expect(d.reason).toMatch(/launch context/);
  });

  test('granular scopes on one type combine as a union (OR)', () => {
    const scope = 'user/Condition.rs?code=http://hl7.org/fhir/sid/icd-10-cm|H40 user/Condition.rs?category=encounter-diagnosis user/Observation.rs';
    const d = decide(principal('researcher', ['p1'], scope), { resourceType: 'Condition', interaction: 'search' });
    expect(d.allow).toBe(true);
    expect(d.granularFilters).toEqual([{ code: 'http://hl7.org/fhir/sid/icd-10-cm|H40' }, { category: 'encounter-diagnosis' }]);
  });

  test('an unrestricted scope on the type lifts the granular restrictions', () => {
    const d = decide(principal('researcher', ['p1'], 'user/Condition.rs?code=x|H40 user/Condition.rs'), { resourceType: 'Condition', interaction: 'search' });
    expect(d.granularFilters).toEqual([]);
  });

  test('a granular scope without the needed letter does not count', () => {
    const d = decide(principal('researcher', ['p1'], 'user/Condition.r?code=x|H40 user/Condition.s'), { resourceType: 'Condition', interaction: 'search' });
    expect(d.allow).toBe(true);
    expect(d.granularFilters).toEqual([]);
  });
});

describe('scopeRowRules: what the scopes let a read see, type by type', () => {
  test('an unrestricted * scope narrows nothing', () => {
    expect(scopeRowRules(principal('researcher', ['p1'], 'user/*.rs'), 'search')).toBeUndefined();
  });

  test('types named whole, granular parameter sets as a union, an unrestricted scope winning over granular ones', () => {
    const rows = scopeRowRules(principal('researcher', ['p1'], 'user/Patient.r user/Condition.rs?code=a user/Condition.rs?code=b user/Observation.rs?category=x user/Observation.rs'), 'search');
    expect(rows?.whole.slice().sort()).toEqual(['Observation', 'Patient']);
    expect([...(rows?.granular ?? new Map()).entries()]).toEqual([['Condition', [{ code: 'a' }, { code: 'b' }]]]);
    expect(rows?.anyType).toEqual([]);
  });

  test('a scope that grants neither r nor the letters asked shows nothing; patient/ scopes show nothing', () => {
    const rows = scopeRowRules(principal('researcher', ['p1'], 'user/Condition.c patient/Patient.rs user/Group.s'), 'search');
    expect(rows?.whole).toEqual(['Group']);
    expect(rows?.granular.size).toBe(0);
  });

  test('writes are not narrowed (the decision checks the type they change)', () => {
    for (const interaction of ['create', 'update', 'delete'] as Interaction[]) {
      expect(scopeRowRules(principal('researcher', ['p1'], 'user/Condition.cruds?code=a'), interaction)).toBeUndefined();
    }
  });
});
