import { getAllDataTypes, OperationOutcomeError as MedplumOutcomeError, validateResource, validateTypedValue } from '@medplum/core';
import type { StructureDefinition } from '@medplum/fhirtypes';
import { loadFhirDefinitions } from '../../../src/fhir/definitions';
import { OperationOutcomeError } from '../../../src/fhir/outcome';
import { assertResourceShape, assertValidResource, collectValidationIssues, profileTypeKey } from '../../../src/fhir/validation';

const defs = loadFhirDefinitions();
const thrown = (fn: () => unknown): OperationOutcomeError => {
  try {
    fn();
  } catch (e) {
    if (e instanceof OperationOutcomeError) return e;
    throw e;
  }
  throw new Error('expected an OperationOutcomeError');
};

describe('resource validation against R4 StructureDefinitions', () => {
  test('a valid Patient has no issues', () => {
    expect(collectValidationIssues(defs, { resourceType: 'Patient', name: [{ family: 'X' }], birthDate: '1970-01-01' } as any)).toEqual([]);
  });

  test('a bad date is a 422 naming Patient.birthDate', () => {
    const e = thrown(() => assertValidResource(defs, { resourceType: 'Patient', birthDate: '1970-13-45' } as any));
    expect(e.status).toBe(422);
    expect(e.outcome.issue?.[0].expression).toEqual(['Patient.birthDate']);
  });

  test('a missing required element names it', () => {
    const e = thrown(() => assertValidResource(defs, { resourceType: 'Observation', status: 'final' } as any));
    expect(e.outcome.issue?.map((i) => i.expression?.[0])).toEqual(['Observation.code']);
  });

  test('an unknown element names it', () => {
    const e = thrown(() => assertValidResource(defs, { resourceType: 'Patient', favouriteColour: 'blue' } as any));
    expect(e.outcome.issue?.[0].expression).toEqual(['Patient.favouriteColour']);
  });

  test('a contained resource of another type is validated too', () => {
    const eob = { resourceType: 'Condition', subject: { reference: 'Patient/1' }, contained: [{ resourceType: 'Practitioner', id: 'a', gender: 5 }] };
    const issues = collectValidationIssues(defs, eob as any);
    expect(issues.some((i) => i.expression?.[0]?.includes('gender'))).toBe(true);
  });

  test('a profile from fhir-profiles/ claimed in meta.profile is enforced', () => {
    const study = { resourceType: 'ImagingStudy', status: 'available', subject: { reference: 'Patient/1' }, meta: { profile: ['https://imaging-lake.org/fhir/StructureDefinition/imaging-lake-imagingstudy'] } };
    const e = thrown(() => assertValidResource(defs, study as any));
    expect(e.outcome.issue?.map((i) => i.expression?.[0])).toEqual(['ImagingStudy.identifier', 'ImagingStudy.started']);
  });

  test('a body without resourceType is a 400', () => {
    expect(thrown(() => assertResourceShape(defs, { name: 'x' })).status).toBe(400);
  });

  test('an unknown resourceType is a 400', () => {
    expect(thrown(() => assertResourceShape(defs, { resourceType: 'Spaceship' })).outcome.issue?.[0].diagnostics).toMatch(/Unknown resource type Spaceship/);
  });

  test('a resourceType other than the URL type is a 400', () => {
    expect(thrown(() => assertResourceShape(defs, { resourceType: 'Patient' }, 'Observation')).status).toBe(400);
  });
});

describe('profiles parsed once', () => {
  const url = 'https://imaging-lake.org/fhir/StructureDefinition/imaging-lake-imagingstudy';
  const profile = defs.profiles.get(url) as StructureDefinition;
  const study = {
    resourceType: 'ImagingStudy',
    status: 'available',
    subject: { reference: 'Patient/1' },
    identifier: [{ system: 'urn:dicom:uid', value: 'urn:oid:1.2.3' }],
    started: '2020-01-02T03:04:05Z',
    series: [{ uid: '1.2.3.4', modality: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: 'OPT' }, instance: [{ uid: '1.2.3.4.5', sopClass: { system: 'urn:ietf:rfc:3986', code: 'urn:oid:1.2' } }] }],
    meta: { profile: [url] },
  };
  const issuesOf = (validate: () => unknown[]) => {
    try {
      return validate();
    } catch (e) {
      if (e instanceof MedplumOutcomeError) return e.outcome.issue ?? [];
      throw e;
    }
  };
  test.each([
    ['a conforming study', study],
    ['no started', { ...study, started: undefined }],
    ['no identifier', { ...study, identifier: undefined }],
    ['a wrong type in a series', { ...study, series: [{ ...study.series[0], number: 'one' }] }],
    ['an unknown element', { ...study, colour: 'blue' }],
  ])('%s: the same profile issues as validating with the profile each time', (_name, r) => {
    const clean = JSON.parse(JSON.stringify(r));
    // medplum's own profile validation parses the profile on every call.
    const expected = issuesOf(() => validateResource(clean, { profile }));
    expect(issuesOf(() => validateTypedValue({ type: profileTypeKey(profile), value: clean }))).toEqual(expected);
  });

  test('the profile is parsed once and reused', () => {
    const key = profileTypeKey(profile);
    const schema = getAllDataTypes()[key];
    collectValidationIssues(defs, study as any);
    expect(profileTypeKey(profile)).toBe(key);
    expect(getAllDataTypes()[key]).toBe(schema);
  });

  test('a changed profile replaces the parsed one', () => {
    const v1 = JSON.parse(JSON.stringify(profile)) as StructureDefinition;
    v1.url = 'https://imaging-lake.org/fhir/StructureDefinition/test-changing';
    const v2 = JSON.parse(JSON.stringify(v1)) as StructureDefinition;
    const started = v2.snapshot?.element?.find((e) => e.path === 'ImagingStudy.started');
    if (started) started.min = 0;
    const k1 = profileTypeKey(v1);
    const k2 = profileTypeKey(v2);
    expect(k2).not.toBe(k1);
    expect(getAllDataTypes()[k1]).toBeUndefined();
    expect(getAllDataTypes()[k2]?.elements.started?.min).toBe(0);
  });
});
