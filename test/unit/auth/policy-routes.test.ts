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
  ])('%s %s -> %s %s', (method, path, type, interaction, auditAction) => {
    const r = classifyRequest(method, path)!;
    expect(r.resourceType).toBe(type);
    expect(r.interaction).toBe(interaction);
    expect(r.auditAction).toBe(auditAction);
  });

  test('study UIDs of DICOMweb paths are recorded', () => {
    expect(classifyRequest('GET', '/dicomweb/studies/1.2.3/series/4/instances/5')!.studyUids).toEqual(['1.2.3']);
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

  test('introspection is not public', () => {
    expect(isPublicPath('/oauth2/introspect')).toBe(false);
  });
});
