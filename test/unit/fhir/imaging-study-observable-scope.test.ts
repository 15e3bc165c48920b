import { observableScope } from '../../../src/fhir/dicom/imaging-study-flusher';

/** Which FHIR requests must wait for pending ImagingStudy rewrites (src/fhir/dicom/imaging-study-flusher.ts). */
describe('observableScope', () => {
  const get = (path: string, query: Record<string, string[]> = {}) => observableScope({ method: 'GET', path, query });

  test.each([
    ['/Patient/abc', {}],
    ['/Condition', { code: ['E11.9'] }],
    ['/Observation', { subject: ['Patient/abc'], _count: ['10'] }],
    ['/metadata', {}],
    ['/AuditEvent', { entity: ['Patient/1'] }],
    ['/Patient', { _revinclude: ['Condition:patient'], _count: ['20'] }],
    ['/Patient', { _revinclude: ['Condition:subject:Patient', 'Provenance:*'] }],
  ])('%s %j cannot read an ImagingStudy', (path, query) => {
    expect(get(path, query)).toBe('none');
  });

  test('a read, vread or history of one ImagingStudy waits for that study only', () => {
    expect(get('/ImagingStudy/abc-1')).toEqual({ imagingStudyId: 'abc-1' });
    expect(get('/ImagingStudy/abc-1/_history/2', { _format: ['json'] })).toEqual({ imagingStudyId: 'abc-1' });
    expect(observableScope({ method: 'PUT', path: '/ImagingStudy/abc-1', query: {} })).toEqual({ imagingStudyId: 'abc-1' });
  });

  test.each([
    ['/ImagingStudy', {}],
    ['/ImagingStudy/_history', {}],
    ['/ImagingStudy/abc/$validate', {}],
    ['/_history', {}],
    ['/', {}],
    ['/Patient', { _revinclude: ['ImagingStudy:subject'] }],
    ['/DiagnosticReport', { _include: ['DiagnosticReport:imaging-study'] }],
    ['/Observation', { '_include:iterate': ['Observation:derived-from'] }],
    ['/Patient', { '_has:ImagingStudy:subject:modality': ['MR'] }],
    ['/DiagnosticReport', { 'subject:Patient.name': ['x'] }],
    ['/Patient/abc', { _revinclude: ['*'] }],
    ['/Patient', { _revinclude: ['Condition:patient', 'ImagingStudy:patient'] }],
    ['/Patient', { _revinclude: ['Condition:patient'], '_revinclude:iterate': ['Observation:has-member'] }],
    ['/Patient', { _revinclude: ['Condition'] }],
  ])('%s %j may read any ImagingStudy', (path, query) => {
    expect(get(path, query)).toBe('all');
  });

  test('POST _search reads its parameters from the form body', () => {
    expect(observableScope({ method: 'POST', path: '/Patient/_search', query: {}, body: { _revinclude: 'ImagingStudy:patient' } })).toBe('all');
    expect(observableScope({ method: 'POST', path: '/Patient/_search', query: {}, body: { name: 'x' } })).toBe('none');
  });

  test('a conditional create naming ImagingStudy in If-None-Exist may read them', () => {
    expect(observableScope({ method: 'POST', path: '/Patient', query: {}, headers: { 'if-none-exist': '_has:ImagingStudy:subject:identifier=x' } })).toBe('all');
  });
});
