import type { Condition, Encounter } from '@medplum/fhirtypes';
import { loadFhirDefinitions } from '../../../src/fhir/definitions';
import { matchFilter } from '../../../src/fhir/search/row-match';
import { parseFilter } from '../../../src/fhir/search/search-request';
import { extractIndexRows } from '../../../src/fhir/store/index-rows';

const defs = loadFhirDefinitions();
const ICD10 = 'http://hl7.org/fhir/sid/icd-10-cm';

/** Whether `resource` matches `key=value`, evaluated in memory (undefined: cannot tell). */
function matches(resource: Condition | Encounter, key: string, value: string): boolean | undefined {
  return matchFilter(parseFilter(defs, resource.resourceType, key, value), extractIndexRows(defs, resource));
}

describe('matchFilter: a search filter on the index rows of a resource not stored', () => {
  const condition: Condition = {
    resourceType: 'Condition',
    subject: { reference: 'Patient/p1' },
    code: { coding: [{ system: ICD10, code: 'H40.11', display: 'Primary open-angle glaucoma' }] },
    recordedDate: '2021-03-15',
  };

  test('tokens: code, system|code, |code, system|, comma lists', () => {
    expect(matches(condition, 'code', 'H40.11')).toBe(true);
    expect(matches(condition, 'code', `${ICD10}|H40.11`)).toBe(true);
    expect(matches(condition, 'code', `${ICD10}|`)).toBe(true);
    expect(matches(condition, 'code', '|H40.11')).toBe(false);
    expect(matches(condition, 'code', 'E11.9,H40.11')).toBe(true);
    expect(matches(condition, 'code', 'h40.11')).toBe(false);
  });

  test('token modifiers :not, :text, :below, :missing', () => {
    expect(matches(condition, 'code:not', 'E11.9')).toBe(true);
    expect(matches(condition, 'code:not', 'H40.11')).toBe(false);
    expect(matches(condition, 'code:text', 'open-angle')).toBe(true);
    expect(matches(condition, 'code:text', 'angle')).toBe(false);
    expect(matches(condition, 'code:below', 'H40')).toBe(true);
    expect(matches(condition, 'code:missing', 'false')).toBe(true);
    expect(matches(condition, 'severity:missing', 'true')).toBe(true);
  });

  test('dates with prefixes against the value at its precision', () => {
    expect(matches(condition, 'recorded-date', '2021-03-15')).toBe(true);
    expect(matches(condition, 'recorded-date', '2021-03')).toBe(true);
    expect(matches(condition, 'recorded-date', 'eq2021-03-15T10:00:00Z')).toBe(false);
    expect(matches(condition, 'recorded-date', 'ge2021-03-15')).toBe(true);
    expect(matches(condition, 'recorded-date', 'gt2021-03-15')).toBe(false);
    expect(matches(condition, 'recorded-date', 'sa2021-03-14')).toBe(true);
    expect(matches(condition, 'recorded-date', 'eb2021-03-15')).toBe(false);
    expect(matches(condition, 'recorded-date', 'ne2021-03-15')).toBe(false);
  });

  test('an open period is an infinite range', () => {
    const encounter: Encounter = { resourceType: 'Encounter', status: 'in-progress', class: { code: 'AMB' }, period: { start: '2021-03-15T08:00:00Z' } };
    expect(matches(encounter, 'date', 'gt2030-01-01')).toBe(true);
    expect(matches(encounter, 'date', 'lt2021-01-01')).toBe(false);
  });

  test('what it does not evaluate is undefined: other types, chains', () => {
    expect(matches(condition, 'subject', 'Patient/p1')).toBeUndefined();
    expect(matches(condition, 'patient.name', 'x')).toBeUndefined();
  });
});
