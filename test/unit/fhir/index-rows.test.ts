import { loadFhirDefinitions, rootElementsOf } from '../../../src/fhir/definitions';
import { extractIndexRows } from '../../../src/fhir/store/index-rows';

const defs = loadFhirDefinitions();

describe('index values from R4 SearchParameter FHIRPath expressions', () => {
  const patient = {
    resourceType: 'Patient',
    id: 'p1',
    identifier: [{ system: 'urn:mrn', value: 'MRN-7', type: { text: 'Medical record number' } }],
    name: [{ family: 'Müller', given: ['José', 'Q'], prefix: ['Dr.'] }],
    gender: 'male',
    birthDate: '1970-05',
    active: true,
    managingOrganization: { reference: 'Organization/o1' },
    generalPractitioner: [{ identifier: { system: 'urn:npi', value: '99' } }],
    meta: { tag: [{ system: 'urn:tags', code: 'study-a' }], profile: ['http://example.org/p'] },
  };
  const rows = extractIndexRows(defs, patient as any);

  test('identifier is a token with system, code and the type text', () => {
    expect(rows.token.filter((r) => r.param === 'identifier')).toEqual([{ param: 'identifier', system: 'urn:mrn', code: 'MRN-7', text: 'medical record number' }]);
  });

  test('name yields each component and the full name, lower case without accents', () => {
    expect(rows.string.filter((r) => r.param === 'name').map((r) => r.value).sort()).toEqual(['dr.', 'jose', 'jose q muller', 'muller', 'q'].sort());
    expect(rows.string.find((r) => r.param === 'family')).toEqual({ param: 'family', value: 'muller', exact: 'Müller' });
  });

  test('a month birthDate is the whole month', () => {
    expect(rows.date.filter((r) => r.param === 'birthdate')).toEqual([{ param: 'birthdate', low: '1970-05-01T00:00:00.000Z', high: '1970-06-01T00:00:00.000Z' }]);
  });

  test('codes and booleans are system-less tokens', () => {
    expect(rows.token.find((r) => r.param === 'gender')).toMatchObject({ system: null, code: 'male' });
    expect(rows.token.find((r) => r.param === 'active')).toMatchObject({ system: null, code: 'true' });
  });

  test('a literal reference is typed; a logical one is indexed for :identifier', () => {
    expect(rows.reference).toContainEqual({ param: 'organization', targetType: 'Organization', targetId: 'o1' });
    expect(rows.token).toContainEqual({ param: 'general-practitioner:identifier', system: 'urn:npi', code: '99', text: null });
  });

  test('Resource-level parameters (_tag, _profile) are indexed for every type', () => {
    expect(rows.token).toContainEqual({ param: '_tag', system: 'urn:tags', code: 'study-a', text: null });
    expect(rows.uri).toContainEqual({ param: '_profile', value: 'http://example.org/p' });
  });

  test('an Observation value[x] Quantity is a number row with system and code', () => {
    const obs = {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '8302-2', display: 'Body Height' }], text: 'Body Height' },
      subject: { reference: 'Patient/p1' },
      effectivePeriod: { start: '2020-01-01T10:00:00Z' },
      valueQuantity: { value: 172.5, unit: 'cm', system: 'http://unitsofmeasure.org', code: 'cm' },
    };
    const r = extractIndexRows(defs, obs as any);
    expect(r.number.filter((n) => n.param === 'value-quantity')).toEqual([
      { param: 'value-quantity', low: '172.5', high: '172.5', system: 'http://unitsofmeasure.org', code: 'cm' },
    ]);
    expect(r.reference).toContainEqual({ param: 'patient', targetType: 'Patient', targetId: 'p1' });
    expect(r.date.find((d) => d.param === 'date')).toEqual({ param: 'date', low: '2020-01-01T10:00:00.000Z', high: 'infinity' });
    expect(r.token).toContainEqual({ param: 'code', system: 'http://loinc.org', code: '8302-2', text: 'body height' });
  });

  test('our own laterality SearchParameter indexes ImagingStudy series laterality', () => {
    const study = {
      resourceType: 'ImagingStudy',
      status: 'available',
      subject: { reference: 'Patient/p1' },
      series: [{ uid: '1.2.3', modality: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: 'OPT' }, laterality: { system: 'http://snomed.info/sct', code: '24028007', display: 'Right' } }],
    };
    expect(extractIndexRows(defs, study as any).token).toContainEqual({ param: 'laterality', system: 'http://snomed.info/sct', code: '24028007', text: 'right' });
  });

  test('root elements of a union expression', () => {
    expect(rootElementsOf('Observation', '(Observation.value as Quantity) | Observation.component.value')).toEqual(['value', 'component']);
    expect(rootElementsOf('Patient', '%resource.name')).toBeUndefined();
  });
});
