import { decide } from '../../../src/auth/policy';
import { classifyRequest } from '../../../src/auth/policy-routes';
import type { Principal } from '../../../src/auth/principal';
import { parseScopes } from '../../../src/auth/scopes';
import { defaultScopesForRole, type Role } from '../../../src/auth/roles';

function principal(role: Role, projects: string[] = ['p1']): Principal {
  const scopeText = defaultScopesForRole(role).join(' ');
  return { subject: `u-${role}`, role, scopes: parseScopes(scopeText), scopeText, projects, issuer: 'test', source: 'local', expiresAt: 0 };
}

function ask(role: Role, method: string, path: string, projects?: string[]) {
  const route = classifyRequest(method, path)!;
  return { route, decision: decide(principal(role, projects), { resourceType: route.resourceType, interaction: route.interaction }) };
}

describe('policy: /privacy routes', () => {
  test('routes are classified as audited privacy pseudo-resources', () => {
    expect(classifyRequest('POST', '/privacy/reidentification-requests')).toMatchObject({ resourceType: 'ReidentificationRequest', interaction: 'reidentify', audited: true });
    expect(classifyRequest('POST', '/privacy/reidentification-requests/7/approve')).toMatchObject({ interaction: 'approve', resourceId: '7' });
    expect(classifyRequest('DELETE', '/privacy/burned-in-clearances/1.2.3')).toMatchObject({ resourceType: 'BurnedInClearance', interaction: 'quarantine', auditAction: 'delete', resourceId: '1.2.3' });
    expect(classifyRequest('GET', '/privacy/overlap')).toMatchObject({ resourceType: 'PatientOverlap', isSearch: true });
    expect(classifyRequest('PATCH', '/privacy/reidentification-requests/7')).toMatchObject({ interaction: 'administer' });
  });

  test.each([
    ['admin', 'GET', '/privacy/projects/p1/deid-options', true],
    ['data-manager', 'PUT', '/privacy/projects/p1/deid-options', true],
    ['pi', 'GET', '/privacy/projects/p1/deid-options', false],
    ['researcher', 'PUT', '/privacy/projects/p1/deid-options', false],
    ['data-manager', 'POST', '/privacy/burned-in-clearances', true],
    ['data-manager', 'DELETE', '/privacy/burned-in-clearances/1.2.3', true],
    ['researcher', 'POST', '/privacy/burned-in-clearances', false],
    ['pi', 'POST', '/privacy/reidentification-requests', true],
    ['researcher', 'POST', '/privacy/reidentification-requests', false],
    ['data-manager', 'POST', '/privacy/reidentification-requests', false],
    ['admin', 'POST', '/privacy/reidentification-requests', false],
    ['admin', 'POST', '/privacy/reidentification-requests/1/approve', true],
    ['pi', 'POST', '/privacy/reidentification-requests/1/refuse', true],
    ['researcher', 'POST', '/privacy/reidentification-requests/1/approve', false],
    ['data-manager', 'POST', '/privacy/reidentification-requests/1/approve', false],
    ['pi', 'POST', '/privacy/reidentification-requests/1/resolve', true],
    ['admin', 'POST', '/privacy/reidentification-requests/1/resolve', false],
    ['pi', 'GET', '/privacy/reidentification-requests', true],
    ['researcher', 'GET', '/privacy/reidentification-requests/1', false],
    ['pi', 'GET', '/privacy/overlap', true],
    ['researcher', 'GET', '/privacy/overlap', false],
  ] as const)('%s %s %s -> %s', (role, method, path, allowed) => {
    expect(ask(role, method, path).decision.allow).toBe(allowed);
  });

  test('a PI of several projects may file without naming one in a header (the body names it)', () => {
    const { decision } = ask('pi', 'POST', '/privacy/reidentification-requests', ['p1', 'p2']);
    expect(decision.allow).toBe(true);
    expect(decision.rowFilter.projects).toEqual(['p1', 'p2']);
  });
});
