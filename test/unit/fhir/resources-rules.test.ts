import type { Condition, Group } from '@medplum/fhirtypes';
import { OperationOutcomeError } from '../../../src/fhir/outcome';
import { checkConditionCodes } from '../../../src/fhir/resources/condition-rules';
import { checkGroupMembers, referencedType } from '../../../src/fhir/resources/group-rules';
import { parseCodeList } from '../../../src/fhir/resources/icd10cm-codes';
import { assertResourceRules, createResourceRules } from '../../../src/fhir/resources/resource-rules';

const ICD10 = 'http://hl7.org/fhir/sid/icd-10-cm';
const codes = parseCodeList('H47.01*\nH47.011\nH47.012\n');
const condition = (...coding: Array<{ system?: string; code?: string }>): Condition => ({ resourceType: 'Condition', subject: { reference: 'Patient/1' }, code: { coding } });

describe('Condition ICD-10-CM rule', () => {
  test('a known code has no issue', () => expect(checkConditionCodes(condition({ system: ICD10, code: 'H47.011' }), () => codes)).toEqual([]));
  test('an unknown code is an error at its coding index', () => {
    const issues = checkConditionCodes(condition({ system: 'http://snomed.info/sct', code: '1' }, { system: ICD10, code: 'H47.019' }), () => codes);
    expect(issues.map((i) => [i.severity, i.code, i.expression?.[0]])).toEqual([['error', 'code-invalid', 'Condition.code.coding[1].code']]);
  });
  test('an ICD-10-CM coding without a code is an error', () => {
    expect(checkConditionCodes(condition({ system: ICD10 }), () => codes)[0]).toMatchObject({ severity: 'error', code: 'required' });
  });
  test('a header is a warning only', () => expect(checkConditionCodes(condition({ system: ICD10, code: 'H47.01' }), () => codes).map((i) => i.severity)).toEqual(['warning']));
  test('the code list is not consulted when no coding is ICD-10-CM', () => {
    const list = jest.fn(() => codes);
    checkConditionCodes(condition({ system: 'http://snomed.info/sct', code: '1' }), list);
    expect(list).not.toHaveBeenCalled();
  });
});

describe('Group member rule', () => {
  const group = (type: Group['type'], ...refs: string[]): Group => ({ resourceType: 'Group', type, actual: true, member: refs.map((reference) => ({ entity: { reference } })) });
  test('Patient members of a person group pass', () => expect(checkGroupMembers(group('person', 'Patient/1', 'https://x.org/fhir/Patient/2'))).toEqual([]));
  test('a Device in a person group is an error naming the member', () => expect(checkGroupMembers(group('person', 'Patient/1', 'Device/d')).map((i) => i.expression?.[0])).toEqual(['Group.member[1].entity']));
  test('PractitionerRole members of a practitioner group pass', () => expect(checkGroupMembers(group('practitioner', 'PractitionerRole/r'))).toEqual([]));
  test('unresolvable references (urn:uuid, contained) are not judged', () => expect(checkGroupMembers(group('person', 'urn:uuid:1', '#p1'))).toEqual([]));
  test('referencedType reads the type from the reference, else from reference.type', () => {
    expect([referencedType({ reference: 'Patient/1/_history/2' }), referencedType({ reference: 'urn:uuid:1', type: 'Patient' }), referencedType(undefined)]).toEqual(['Patient', 'Patient', undefined]);
  });
});

describe('resource rules', () => {
  test('createResourceRules fails at once on a missing code list', () => expect(() => createResourceRules({ icd10cmCodesPath: '/nonexistent/icd.txt' })).toThrow('/nonexistent/icd.txt cannot be read'));
  test('assertResourceRules throws 422 with every issue', () => {
    const rules = createResourceRules();
    let caught: unknown;
    try {
      assertResourceRules(rules, condition({ system: ICD10, code: 'H47.01' }, { system: ICD10, code: 'XX' }));
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(OperationOutcomeError);
    expect((caught as OperationOutcomeError).status).toBe(422);
    expect((caught as OperationOutcomeError).outcome.issue?.map((i) => i.severity)).toEqual(['warning', 'error']);
  });
  test('types without rules pass untouched', () => expect(createResourceRules().check({ resourceType: 'Patient' })).toEqual([]));
});
