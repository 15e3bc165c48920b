import type { Resource } from '@medplum/fhirtypes';
import { loadFhirDefinitions } from '../../../src/fhir/definitions';
import { patientLinkOf } from '../../../src/fhir/deid/patient-links';
import { maskResource, PATIENT_KEY_SYSTEM } from '../../../src/fhir/deid/resource-masker';

/** The de-identified view of single resources, driven by the R4 element types (no database). */
describe('maskResource', () => {
  const defs = loadFhirDefinitions();
  const now = new Date('2026-11-22T00:00:00Z');
  const S = 'PHI_SENTINEL';

  const patient = {
    resourceType: 'Patient',
    id: 'p1',
    meta: { versionId: '2', lastUpdated: '2026-01-10T12:00:00.000Z' },
    text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${S}</div>` },
    extension: [{ url: 'http://example.org/mothers-maiden-name', valueString: S }],
    identifier: [{ system: 'urn:mrn', value: `MRN-${S}` }],
    name: [{ family: S, given: [S] }],
    telecom: [{ system: 'phone', value: S }],
    gender: 'female',
    birthDate: '1980-05-17',
    _birthDate: { extension: [{ url: 'http://example.org/x', valueString: S }] },
    deceasedDateTime: '2025-03-01T10:00:00+01:00',
    address: [{ line: [S], city: S }],
    photo: [{ contentType: 'image/png', data: 'AAAA' }],
    contact: [{ name: { family: S }, telecom: [{ value: S }] }],
    communication: [{ language: { coding: [{ system: 'urn:ietf:bcp:47', code: 'en' }], text: S } }],
    generalPractitioner: [{ reference: 'Practitioner/gp1', display: S }],
  } as unknown as Resource;

  test('a Patient keeps only its PatientKey, codes, references and shifted dates', () => {
    const out = maskResource(defs, patient, { linked: true, offsetDays: -30, patientKey: 'PK-1', now }) as any;
    expect(JSON.stringify(out)).not.toContain(S);
    expect(out.identifier).toEqual([{ system: PATIENT_KEY_SYSTEM, value: 'PK-1' }]);
    expect(out.birthDate).toBe('1980-04-17');
    expect(out.deceasedDateTime).toBe('2025-01-30T10:00:00+01:00');
    expect(out.meta.lastUpdated).toBe('2025-12-11T12:00:00.000Z');
    expect(out.gender).toBe('female');
    expect(out.generalPractitioner).toEqual([{ reference: 'Practitioner/gp1' }]);
    expect(out.communication[0].language.coding[0].code).toBe('en');
    for (const k of ['name', 'telecom', 'address', 'photo', 'contact', 'text', 'extension']) expect(out[k]).toBeUndefined();
    expect(out.meta.security).toEqual([expect.objectContaining({ code: 'PSEUDED' })]);
  });

  test('a birth date implying an age over 89 is suppressed, year included', () => {
    const old = { ...patient, birthDate: '1936-11-01' } as Resource;
    const out = maskResource(defs, old, { linked: true, offsetDays: 40, patientKey: 'PK-2', now }) as any;
    expect(out.birthDate).toBeUndefined();
    expect(out._birthDate.extension[0].valueCode).toBe('masked');
    // Real age 89 but the shifted date makes it 90: suppressed too.
    const edge = { ...patient, birthDate: '1936-12-10' } as Resource;
    expect((maskResource(defs, edge, { linked: true, offsetDays: -30, now }) as any).birthDate).toBeUndefined();
  });

  test('a patient-linked resource whose offset is unknown shows no dates at all', () => {
    const cond = { resourceType: 'Condition', id: 'c1', subject: { reference: 'Patient/p1' }, onsetDateTime: '2020-01-01', recordedDate: '2020-01-02' } as Resource;
    const out = maskResource(defs, cond, { linked: true, now }) as any;
    expect(out.onsetDateTime).toBeUndefined();
    expect(out.recordedDate).toBeUndefined();
    expect(out.subject).toEqual({ reference: 'Patient/p1' });
  });

  test('a Condition loses notes, free text and other identifiers, keeps code system displays', () => {
    const cond = {
      resourceType: 'Condition',
      id: 'c1',
      identifier: [{ system: 'urn:other', value: S }],
      clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }] },
      code: { coding: [{ system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'H40.1111', display: 'Primary open-angle glaucoma, right eye, mild stage' }], text: S },
      subject: { reference: 'Patient/p1', display: S },
      onsetPeriod: { start: '2020-01-01T10:00:00Z', end: '2020-02-01' },
      note: [{ text: S, authorString: S }],
      evidence: [{ detail: [{ reference: 'Observation/o1', display: S }] }],
    } as unknown as Resource;
    const out = maskResource(defs, cond, { linked: true, offsetDays: 3, now }) as any;
    expect(JSON.stringify(out)).not.toContain(S);
    expect(out.code).toEqual({ coding: [{ system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'H40.1111', display: 'Primary open-angle glaucoma, right eye, mild stage' }] });
    expect(out.onsetPeriod).toEqual({ start: '2020-01-04T10:00:00Z', end: '2020-02-04' });
    expect(out.identifier).toBeUndefined();
    expect(out.evidence[0].detail).toEqual([{ reference: 'Observation/o1' }]);
  });

  test('an ImagingStudy shows its study, series and instance UIDs mapped, and no accession number', () => {
    const study = {
      resourceType: 'ImagingStudy',
      id: 's1',
      status: 'available',
      identifier: [
        { use: 'official', system: 'urn:dicom:uid', value: 'urn:oid:1.2.3' },
        { type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'ACSN' }] }, value: `ACC-${S}` },
      ],
      subject: { reference: 'Patient/p1' },
      started: '2024-03-02T10:11:12Z',
      description: S,
      series: [{ uid: '1.2.3.4', modality: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: 'OPT' }, description: S, started: '2024-03-02', instance: [{ uid: '1.2.3.4.5', sopClass: { system: 'urn:ietf:rfc:3986', code: 'urn:oid:1.2.840.10008.5.1.4.1.1.77.1.5.4' }, title: S }] }],
    } as unknown as Resource;
    const out = maskResource(defs, study, { linked: true, offsetDays: 10, mapUid: (u) => `2.25.${u.length}`, now }) as any;
    expect(JSON.stringify(out)).not.toContain(S);
    expect(JSON.stringify(out)).not.toContain('1.2.3');
    expect(out.identifier).toEqual([{ use: 'official', system: 'urn:dicom:uid', value: 'urn:oid:2.25.5' }]);
    expect(out.series[0].uid).toBe('2.25.7');
    expect(out.series[0].instance[0].uid).toBe('2.25.9');
    expect(out.started).toBe('2024-03-12T10:11:12Z');
    expect(out.series[0].started).toBe('2024-03-12');
    // Without a mapper (no project of the caller holds it) no UID is shown.
    const bare = maskResource(defs, study, { linked: true, offsetDays: 10, now }) as any;
    expect(bare.identifier).toBeUndefined();
    expect(bare.series[0].uid).toBeUndefined();
  });

  test('contained resources are masked with their container', () => {
    const obs = { resourceType: 'Observation', id: 'o1', status: 'final', code: { text: S }, subject: { reference: 'Patient/p1' }, effectiveDateTime: '2020-01-01', contained: [{ resourceType: 'Practitioner', id: 'x', name: [{ family: S }] }], valueString: S } as unknown as Resource;
    const out = maskResource(defs, obs, { linked: true, offsetDays: 1, now }) as any;
    expect(JSON.stringify(out)).not.toContain(S);
    expect(out.contained).toEqual([{ resourceType: 'Practitioner', id: 'x' }]);
    expect(out.effectiveDateTime).toBe('2020-01-02');
  });
});

describe('patientLinkOf', () => {
  const defs = loadFhirDefinitions();
  test('resources are tied to their patient by the Patient compartment', () => {
    expect(patientLinkOf(defs, { resourceType: 'Patient', id: 'p1' } as Resource)).toEqual({ linked: true, patientId: 'p1' });
    expect(patientLinkOf(defs, { resourceType: 'Condition', id: 'c', subject: { reference: 'Patient/p2' } } as Resource)).toEqual({ linked: true, patientId: 'p2' });
    expect(patientLinkOf(defs, { resourceType: 'ImagingStudy', id: 's', status: 'available', subject: { reference: 'Patient/p3' } } as Resource)).toEqual({ linked: true, patientId: 'p3' });
    expect(patientLinkOf(defs, { resourceType: 'Observation', id: 'o', status: 'final', code: {}, subject: { reference: 'Patient/p4' }, performer: [{ reference: 'Patient/p5' }] } as Resource)).toEqual({ linked: true, patientId: 'p4' });
    expect(patientLinkOf(defs, { resourceType: 'Practitioner', id: 'x' } as Resource)).toEqual({ linked: false });
    expect(patientLinkOf(defs, { resourceType: 'Observation', id: 'o', status: 'final', code: {}, subject: { reference: 'Device/d' } } as Resource)).toEqual({ linked: false });
  });
});
