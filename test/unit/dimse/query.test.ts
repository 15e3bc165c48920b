import type { DicomJson } from '../../../src/dicom/types';
import { IdentifierError, parseFindIdentifier, parseRetrieveIdentifier, patientKeyOf, patientSearchOf, responseIdentifier } from '../../../src/dimse/query';

const level = (l: string) => ({ '00080052': { vr: 'CS', Value: [l] } });

describe('C-FIND identifiers as QIDO-RS searches (PS3.4 C.2.2.2, C.4.1.1.3)', () => {
  test('values are match keys, empty elements and the universal * return keys; the keys kept in tag order for the responses', () => {
    const parsed = parseFindIdentifier('study', {
      ...level('STUDY'),
      '00080005': { vr: 'CS', Value: ['ISO_IR 100'] },
      '00100010': { vr: 'PN', Value: [{ Alphabetic: 'DOE^J*' }] },
      '00100020': { vr: 'LO', Value: [''] },
      '00080020': { vr: 'DA', Value: ['20240101-20241231'] },
      '00080061': { vr: 'CS', Value: ['OPT', 'OP'] },
      '00080050': { vr: 'SH', Value: ['*'] },
      '0020000D': { vr: 'UI' },
    } as DicomJson);
    expect(parsed.level).toBe('STUDY');
    expect(parsed.query).toEqual({ '00100010': 'DOE^J*', '00080020': '20240101-20241231', '00080061': 'OPT\\OP', includefield: '00080050,00100020,0020000D' });
    expect(parsed.keys.map((k) => k.tag)).toEqual(['00080020', '00080050', '00080061', '00100010', '00100020', '0020000D']);
    expect(parsed.text).toBe('STUDY?00080020=20240101-20241231&00080061=OPT\\OP&00100010=DOE^J*');
  });

  test('sequence items with values match inside the sequence; private and group length elements are left out', () => {
    const parsed = parseFindIdentifier('study', {
      ...level('SERIES'),
      '00400275': { vr: 'SQ', Value: [{ '00400009': { vr: 'SH', Value: ['SPS1'] }, '00400007': { vr: 'LO' } }] },
      '00090010': { vr: 'LO', Value: ['PRIVATE'] },
      '00080000': { vr: 'UL', Value: [4] },
    } as DicomJson);
    expect(parsed.query).toEqual({ '00400275.00400009': 'SPS1', includefield: '00400275' });
    expect(parsed.keys.map((k) => k.tag)).toEqual(['00400275']);
  });

  test('the level must be present and belong to the model', () => {
    expect(() => parseFindIdentifier('study', { '00100020': { vr: 'LO', Value: ['1'] } })).toThrow(IdentifierError);
    expect(() => parseFindIdentifier('study', level('PATIENT'))).toThrow(/not one of the study root model/);
    expect(parseFindIdentifier('patient', level('patient ')).level).toBe('PATIENT');
    try {
      parseFindIdentifier('study', level('FRAME'));
    } catch (err) {
      expect((err as IdentifierError).status).toBe(0xa900);
    }
  });

  test('a Patient level search keeps the patient keys only, and groups studies by PatientID with its issuer', () => {
    const parsed = parseFindIdentifier('patient', {
      ...level('PATIENT'),
      '00100020': { vr: 'LO', Value: ['P*'] },
      '00100010': { vr: 'PN' },
      '00201200': { vr: 'IS' },
    } as DicomJson);
    expect(patientSearchOf(parsed)).toEqual({ '00100020': 'P*', includefield: '00100010,00100020,00100021' });
    const a = { '00100020': { vr: 'LO', Value: ['P1'] } };
    expect(patientKeyOf(a)).toBe(patientKeyOf({ ...a }));
    expect(patientKeyOf(a)).not.toBe(patientKeyOf({ ...a, '00100021': { vr: 'LO', Value: ['HOSP'] } }));
  });
});

describe('C-FIND response identifiers (PS3.4 C.4.1.1.3.2)', () => {
  test('every requested key comes back, empty when the match has no value; nothing else but the level, character set and Retrieve AE Title', () => {
    const keys = [
      { tag: '00100010', vr: 'PN' },
      { tag: '00080090', vr: 'PN' },
      { tag: '00080054', vr: 'AE' },
    ];
    const match: DicomJson = {
      '00080005': { vr: 'CS', Value: ['ISO_IR 192'] },
      '00100010': { vr: 'PN', Value: [{ Alphabetic: 'DOE^JANE' }] },
      '00100020': { vr: 'LO', Value: ['P1'] },
      '00081190': { vr: 'UR', Value: ['http://x/dicomweb/studies/1'] },
    };
    expect(responseIdentifier('STUDY', keys, match, 'LAKE')).toEqual({
      '00080005': { vr: 'CS', Value: ['ISO_IR 192'] },
      '00080052': { vr: 'CS', Value: ['STUDY'] },
      '00100010': { vr: 'PN', Value: [{ Alphabetic: 'DOE^JANE' }] },
      '00080090': { vr: 'PN' },
      '00080054': { vr: 'AE', Value: ['LAKE'] },
    });
  });
});

describe('C-GET/C-MOVE identifiers (PS3.4 C.4.2.1.4)', () => {
  test('the unique keys of the level and above, UID lists allowed', () => {
    expect(
      parseRetrieveIdentifier('study', { ...level('SERIES'), '0020000D': { vr: 'UI', Value: ['1.2.3'] }, '0020000E': { vr: 'UI', Value: ['1.2.3.4\\1.2.3.5'] } }),
    ).toEqual({ level: 'SERIES', studyInstanceUIDs: ['1.2.3'], seriesInstanceUIDs: ['1.2.3.4', '1.2.3.5'], sopInstanceUIDs: [], patientID: undefined, issuerOfPatientID: undefined });
    expect(parseRetrieveIdentifier('patient', { ...level('PATIENT'), '00100020': { vr: 'LO', Value: ['P1 '] } }).patientID).toBe('P1');
  });

  test('a level without its unique key, or a key that is not a UID, is refused (A900)', () => {
    expect(() => parseRetrieveIdentifier('study', { ...level('SERIES'), '0020000D': { vr: 'UI', Value: ['1.2.3'] } })).toThrow(/Series Instance UID/);
    expect(() => parseRetrieveIdentifier('study', { ...level('IMAGE'), '00080018': { vr: 'UI', Value: ['../etc'] } })).toThrow(/not a UID/);
    expect(() => parseRetrieveIdentifier('patient', level('PATIENT'))).toThrow(/Patient ID/);
  });
});
