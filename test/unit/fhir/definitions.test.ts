import { loadFhirDefinitions } from '../../../src/fhir/definitions';
import { buildCapabilityStatement } from '../../../src/fhir/capability';

const defs = loadFhirDefinitions();

describe('FHIR R4 definitions and the CapabilityStatement', () => {
  test('are loaded once per process', () => {
    expect(loadFhirDefinitions()).toBe(defs);
  });

  test('know every concrete R4 resource type, Synthea ones included, and no abstract ones', () => {
    for (const rt of ['Patient', 'ImagingStudy', 'Claim', 'ExplanationOfBenefit', 'Immunization', 'AuditEvent', 'Group']) expect(defs.resourceTypes.has(rt)).toBe(true);
    expect(defs.resourceTypes.has('DomainResource')).toBe(false);
    expect(defs.resourceTypes.has('Project')).toBe(false);
    expect(defs.resourceTypes.size).toBe(146);
  });

  test('take our own SearchParameter from fhir-profiles/', () => {
    const p = defs.searchParams('ImagingStudy').get('laterality');
    expect([p?.type, p?.custom, p?.expression]).toEqual(['token', true, 'ImagingStudy.series.laterality | ImagingStudy.series.laterality.display.lower()']);
  });

  test('take our own profile from fhir-profiles/', () => {
    expect(defs.profiles.has('https://imaging-lake.org/fhir/StructureDefinition/imaging-lake-imagingstudy')).toBe(true);
  });

  test('give the summary elements of a type', () => {
    const s = defs.summaryElements('Patient');
    expect(s.has('name')).toBe(true);
    expect(s.has('contact')).toBe(false);
  });

  test('the CapabilityStatement is R4 JSON and lists our laterality parameter', () => {
    const cs = buildCapabilityStatement(defs, 'http://x/fhir');
    expect([cs.fhirVersion, cs.format, cs.implementation?.url]).toEqual(['4.0.1', ['json'], 'http://x/fhir']);
    const study = cs.rest?.[0].resource?.find((r) => r.type === 'ImagingStudy');
    expect(study?.searchParam?.find((p) => p.name === 'laterality')?.definition).toBe('https://imaging-lake.org/fhir/SearchParameter/ImagingStudy-laterality');
    expect(study?.supportedProfile).toEqual(['https://imaging-lake.org/fhir/StructureDefinition/imaging-lake-imagingstudy']);
  });

  test('the CapabilityStatement offers no client writes on AuditEvent', () => {
    const cs = buildCapabilityStatement(defs, 'http://x/fhir');
    const audit = cs.rest?.[0].resource?.find((r) => r.type === 'AuditEvent');
    expect(audit?.interaction?.map((i) => i.code)).toEqual(['read', 'vread', 'history-instance', 'history-type', 'search-type']);
  });

  test('composite parameters are not advertised', () => {
    const cs = buildCapabilityStatement(defs, 'http://x/fhir');
    const obs = cs.rest?.[0].resource?.find((r) => r.type === 'Observation');
    expect(obs?.searchParam?.some((p) => p.name === 'code-value-quantity')).toBe(false);
    expect(obs?.searchParam?.some((p) => p.name === 'value-quantity')).toBe(true);
  });

  test('the CapabilityStatement has no empty arrays (invalid FHIR JSON)', () => {
    expect(JSON.stringify(buildCapabilityStatement(defs, 'http://x/fhir'))).not.toMatch(/\[\]/);
  });
});
