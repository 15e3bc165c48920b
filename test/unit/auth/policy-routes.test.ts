import { classifyRequest, isPublicPath } from '../../../src/auth/policy-routes';

describe('classifyRequest', () => {
  test.each([
    ['GET', '/fhir/Patient', 'Patient', 'search', 'search'],
    ['POST', '/fhir/Patient/_search', 'Patient', 'search', 'search'],
    ['GET', '/fhir/Patient/123', 'Patient', 'read', 'read'],
    ['GET', '/fhir/Patient/123/_history/2', 'Patient', 'vread', 'vread'],
    ['GET', '/fhir/Patient/123/_history', 'Patient', 'history', 'history'],
    ['POST', '/fhir/Patient', 'Patient', 'create', 'create'],
    ['PUT', '/fhir/Patient/123', 'Patient', 'update', 'update'],
    ['PATCH', '/fhir/Patient/123', 'Patient', 'patch', 'patch'],
    ['DELETE', '/fhir/Patient/123', 'Patient', 'delete', 'delete'],
    ['GET', '/fhir/Group/g1/$export', 'Group', 'export', 'operation'],
    ['GET', '/fhir/AuditEvent', 'AuditEvent', 'search', 'search'],
    ['GET', '/dicomweb/studies', 'ImagingStudy', 'search', 'search'],
    ['GET', '/dicomweb/studies/1.2.3/series', 'ImagingStudy', 'search', 'search'],
    ['GET', '/dicomweb/studies/1.2.3/series/4.5/instances', 'ImagingStudy', 'search', 'search'],
    ['GET', '/dicomweb/studies/1.2.3', 'ImagingStudy', 'read', 'read'],
    ['GET', '/dicomweb/studies/1.2.3/metadata', 'ImagingStudy', 'read', 'read'],
    ['GET', '/dicomweb/studies/1.2.3/series/4.5/instances/6.7/frames/1', 'ImagingStudy', 'read', 'read'],
    ['POST', '/dicomweb/studies', 'ImagingStudy', 'create', 'create'],
    ['POST', '/dicomweb/studies/1.2.3', 'ImagingStudy', 'create', 'create'],
    ['DELETE', '/dicomweb/studies/1.2.3', 'ImagingStudy', 'delete', 'delete'],
    ['GET', '/admin/anything', 'Server', 'administer', 'operation'],
    ['GET', '/admin/projects', 'Project', 'search', 'search'],
    ['POST', '/admin/projects', 'Project', 'create', 'create'],
    ['PATCH', '/admin/projects/p1', 'Project', 'update', 'update'],
    ['DELETE', '/admin/projects/p1', 'Project', 'delete', 'delete'],
    ['GET', '/admin/projects/p1/members', 'ProjectMember', 'search', 'search'],
    ['PUT', '/admin/projects/p1/members/u1', 'ProjectMember', 'update', 'update'],
    ['POST', '/admin/projects/p1/members/u1/approve', 'ProjectMember', 'approve', 'update'],
    ['POST', '/admin/projects/p1/members/u1/refuse', 'ProjectMember', 'approve', 'update'],
    ['POST', '/admin/projects/p1/members/u1/promote', 'Server', 'administer', 'operation'],
    ['PUT', '/admin/projects/p1/studies/1.2.3', 'ProjectStudy', 'update', 'update'],
    ['DELETE', '/admin/projects/p1/studies/1.2.3', 'ProjectStudy', 'delete', 'delete'],
    ['GET', '/admin/exports', 'ExportApproval', 'search', 'search'],
    ['POST', '/admin/exports/e1/approve', 'ExportApproval', 'approve', 'update'],
  ])('%s %s -> %s %s', (method, path, type, interaction, auditAction) => {
    const r = classifyRequest(method, path)!;
    expect(r.resourceType).toBe(type);
    expect(r.interaction).toBe(interaction);
    expect(r.auditAction).toBe(auditAction);
  });

  test('study UIDs of DICOMweb paths are recorded', () => {
    expect(classifyRequest('GET', '/dicomweb/studies/1.2.3/series/4/instances/5')!.studyUids).toEqual(['1.2.3']);
  });

  test('WADO-URI is an audited ImagingStudy read of the study its query names (PS3.18 9)', () => {
    const r = classifyRequest('GET', '/dicomweb/wado', { requestType: 'WADO', studyUID: '1.2.3', seriesUID: '4', objectUID: '5' })!;
    expect(r).toMatchObject({ protocol: 'dicomweb', resourceType: 'ImagingStudy', interaction: 'read', auditAction: 'read', isSearch: false, audited: true, studyUids: ['1.2.3'] });
    // Without the query (the guard classifies by path), the route records the study.
    expect(classifyRequest('GET', '/dicomweb/wado')).toMatchObject({ interaction: 'read', auditAction: 'read', audited: true });
    expect(classifyRequest('GET', '/dicomweb/wado', { studyUID: ['1.2.3', '1.2.4'] })!.studyUids).toBeUndefined();
  });

  test('the DICOMweb capabilities document is not audited as patient data', () => {
    expect(classifyRequest('GET', '/dicomweb')!.audited).toBe(false);
  });

  test.each(['/healthz', '/readyz', '/fhir/metadata', '/fhir/.well-known/smart-configuration', '/.well-known/smart-configuration', '/oauth2/jwks', '/oauth2/token'])(
    '%s is public',
    (p) => {
      expect(isPublicPath(p)).toBe(true);
      expect(classifyRequest('GET', p)).toBeNull();
    },
  );

  test('a governance path names its project: the decision is made within it', () => {
    expect(classifyRequest('GET', '/admin/projects/p%201/members/u1')!.projectIds).toEqual(['p 1']);
    expect(classifyRequest('GET', '/admin/projects')!.projectIds).toBeUndefined();
    expect(classifyRequest('POST', '/admin/exports/e1/approve')!.projectIds).toBeUndefined();
    expect(classifyRequest('GET', '/admin/projects')!.audited).toBe(true);
  });

  test('introspection is not public', () => {
    expect(isPublicPath('/oauth2/introspect')).toBe(false);
  });
});
