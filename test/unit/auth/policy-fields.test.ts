import { fieldVisibility } from '../../../src/auth/policy-fields';
import { ROLES } from '../../../src/auth/roles';

describe('fieldVisibility: the column-level matrix', () => {
  test.each([
    ['admin', 'visible'],
    ['data-manager', 'masked'],
    ['pi', 'hidden'],
    ['researcher', 'hidden'],
  ] as const)('patient identifiers for %s are %s', (role, treatment) => {
    expect(fieldVisibility(role, 'Patient')[treatment]).toContain('identifier');
  });

  test('diagnosis text is masked for researchers and visible to data managers', () => {
    expect(fieldVisibility('researcher', 'Condition').masked).toContain('code.text');
    expect(fieldVisibility('data-manager', 'Condition').visible).toContain('code.text');
  });

  test('object locations are hidden from researchers and PIs, visible to admin', () => {
    expect(fieldVisibility('researcher', 'StoredInstance').hidden).toEqual(expect.arrayContaining(['blob_key', 'storage_path']));
    expect(fieldVisibility('pi', 'StoredInstance').hidden).toEqual(expect.arrayContaining(['blob_key', 'storage_path']));
    expect(fieldVisibility('admin', 'StoredInstance').visible).toEqual(expect.arrayContaining(['blob_key', 'storage_path']));
  });

  test('researchers see names and dates masked (pseudonyms, shifted dates)', () => {
    expect(fieldVisibility('researcher', 'Patient').masked).toEqual(expect.arrayContaining(['name', 'birthDate']));
  });

  test('each sensitive element is in exactly one list for every role', () => {
    for (const role of ROLES) {
      for (const type of ['Patient', 'ImagingStudy', 'Condition', 'Observation', 'DiagnosticReport', 'StoredInstance']) {
        const v = fieldVisibility(role, type);
        const all = [...v.visible, ...v.masked, ...v.hidden];
        expect(new Set(all).size).toBe(all.length);
        expect(all.length).toBe(fieldVisibility('admin', type).visible.length);
      }
    }
  });

  test('types with no sensitive elements have empty lists', () => {
    expect(fieldVisibility('researcher', 'Group')).toEqual({ visible: [], masked: [], hidden: [] });
  });
});
