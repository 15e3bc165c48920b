import { randomBytes } from 'node:crypto';
import {
  dicomIdentity,
  drawDateOffset,
  fhirIdentities,
  generatePatientKey,
  identityHmac,
  isPatientKey,
  normaliseIssuer,
} from '../../../src/privacy/patient-keys';

describe('PatientKey and identity normalisation', () => {
  test('a PatientKey is PK + 20 base32 characters, different every time', () => {
    const keys = new Set(Array.from({ length: 200 }, () => generatePatientKey()));
    expect(keys.size).toBe(200);
    for (const k of keys) expect(isPatientKey(k)).toBe(true);
    expect(isPatientKey('PK0000000000000000000')).toBe(false);
    expect(isPatientKey('MRN123')).toBe(false);
  });

  test('date offsets are within [-max, max], never 0, and reach both ends', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) {
      const o = drawDateOffset(2);
      expect(o).not.toBe(0);
      expect(Math.abs(o)).toBeLessThanOrEqual(2);
      seen.add(o);
    }
    expect([...seen].sort()).toEqual([-1, -2, 1, 2].sort());
  });

  test('DICOM and FHIR spellings of the same issuer and MRN give the same HMAC', () => {
    const key = randomBytes(32);
    const dicom = dicomIdentity(' 12345 ', '1.2.840.113619');
    const [fhir] = fhirIdentities({ identifier: [{ system: 'urn:OID:1.2.840.113619', value: '12345' }] });
    expect(dicom).toEqual({ issuer: 'urn:oid:1.2.840.113619', mrn: '12345' });
    expect(identityHmac(key, dicom!)).toBe(identityHmac(key, fhir));
    // Free-text issuers map like the FHIR sync maps them (dicom-codes issuerSystem).
    expect(dicomIdentity('A1', 'St Mary')).toEqual({ issuer: 'urn:imaging-lake:issuer:St%20Mary', mrn: 'A1' });
    // No issuer on either side: the same default system.
    expect(identityHmac(key, dicomIdentity('X9', undefined)!)).toBe(identityHmac(key, fhirIdentities({ identifier: [{ value: 'X9' }] })[0]));
  });

  test('another issuer, another MRN or another key give another HMAC; case is kept', () => {
    const key = randomBytes(32);
    const base = identityHmac(key, { issuer: 'urn:oid:1.2.3', mrn: 'abc' });
    expect(identityHmac(key, { issuer: 'urn:oid:1.2.4', mrn: 'abc' })).not.toBe(base);
    expect(identityHmac(key, { issuer: 'urn:oid:1.2.3', mrn: 'ABC' })).not.toBe(base);
    expect(identityHmac(randomBytes(32), { issuer: 'urn:oid:1.2.3', mrn: 'abc' })).not.toBe(base);
    expect(base).toMatch(/^[0-9a-f]{64}$/);
  });

  test('FHIR identities: medical record numbers first, empty values skipped, duplicates folded', () => {
    const ids = fhirIdentities({
      identifier: [
        { system: 'urn:ssn', value: '999' },
        { system: '', value: '  ' },
        { system: 'urn:oid:1.2.3', value: 'M1', type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] } },
        { system: '1.2.3', value: 'M1' },
      ],
    });
    expect(ids).toEqual([
      { issuer: 'urn:oid:1.2.3', mrn: 'M1' },
      { issuer: 'urn:ssn', mrn: '999' },
    ]);
    expect(normaliseIssuer(undefined)).toBe('urn:imaging-lake:patient-id');
    expect(dicomIdentity('', 'X')).toBeUndefined();
  });
});
