import { loadFhirDefinitions } from '../../../src/fhir/definitions';
import { OperationOutcomeError } from '../../../src/fhir/outcome';
import { assertResourceShape, assertValidResource, collectValidationIssues } from '../../../src/fhir/validation';

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
