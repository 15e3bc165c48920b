import { fieldVisibility } from '../../../src/auth/policy-fields';
import { createIdentifierMask } from '../../../src/dicomweb/identifier-mask';
import type { DicomJson } from '../../../src/dicom/types';

const dataset = (): DicomJson => ({
  '00100010': { vr: 'PN', Value: [{ Alphabetic: 'Doe^Jane' }] },
  '00100020': { vr: 'LO', Value: ['MRN-1'] },
  '00100021': { vr: 'LO', Value: ['ISSUER'] },
  '00080050': { vr: 'SH' },
  '00102297': { vr: 'PN', Value: [{ Alphabetic: 'Doe^John' }] },
  '00101002': { vr: 'SQ', Value: [{ '00100020': { vr: 'LO', Value: ['MRN-2'] }, '00100021': { vr: 'LO', Value: ['OTHER'] } }] },
  '00080060': { vr: 'CS', Value: ['OPT'] },
});

describe('the DICOM identifier mask', () => {
  test('follows the policy matrix: nothing for admins, identifiers, telecom, address and contact for data managers', () => {
    expect(createIdentifierMask((type) => fieldVisibility('admin', type))).toBeUndefined();
    expect(createIdentifierMask(undefined)).toBeUndefined();
    const mask = createIdentifierMask((type) => fieldVisibility('data-manager', type))!;
    expect([...mask.masked].sort()).toEqual(['00080050', '00100020', '00101000', '00101040', '00101090', '00102150', '00102152', '00102154', '00102155', '00102297', '00102299']);
    expect(mask.hidden.size).toBe(0);
  });

  test('masks values at every depth, keeps empty attributes empty and leaves the input unchanged', () => {
    const mask = createIdentifierMask((type) => fieldVisibility('data-manager', type))!;
    const input = dataset();
    const before = JSON.stringify(input);
    const out = mask.apply(input);
    expect(JSON.stringify(input)).toBe(before);
    expect(out['00100020']).toEqual({ vr: 'LO', Value: ['***'] });
    expect(out['00102297']).toEqual({ vr: 'PN', Value: [{ Alphabetic: '***' }] });
    expect(out['00080050']).toEqual({ vr: 'SH' });
    expect(out['00100021']).toEqual(input['00100021']);
    expect(out['00100010']).toBe(input['00100010']);
    expect((out['00101002'].Value as DicomJson[])[0]).toEqual({ '00100020': { vr: 'LO', Value: ['***'] }, '00100021': { vr: 'LO', Value: ['OTHER'] } });
  });

  test('a data set with nothing to mask is returned as it is; hidden attributes are left out', () => {
    const mask = createIdentifierMask(() => ({ masked: [], hidden: ['identifier'] }))!;
    const plain: DicomJson = { '00080060': { vr: 'CS', Value: ['CT'] } };
    expect(mask.apply(plain)).toBe(plain);
    const out = mask.apply(dataset());
    expect(out['00100020']).toBeUndefined();
    expect(out['00080050']).toBeUndefined();
    expect((out['00101002'].Value as DicomJson[])[0]['00100020']).toBeUndefined();
    expect(out['00100010']).toBeDefined();
  });
});
