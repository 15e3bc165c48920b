import { collectReferences, isConditionalReference, rewriteReferences } from '../../../src/fhir/bundle/references';

describe('transaction reference rewriting (FHIR R4 http 3.1.0.11.2)', () => {
  const map = new Map([
    ['urn:uuid:aaa', 'Patient/1'],
    ['urn:uuid:bbb', 'Encounter/2'],
  ]);

  test('rewrites nested references and leaves unknown ones', () => {
    const obs = {
      resourceType: 'Observation',
      subject: { reference: 'urn:uuid:aaa' },
      encounter: { reference: 'urn:uuid:bbb' },
      performer: [{ reference: 'Practitioner/7' }, { reference: 'urn:uuid:zzz' }],
    };
    const out = rewriteReferences(obs, map);
    expect(out.subject.reference).toBe('Patient/1');
    expect(out.encounter.reference).toBe('Encounter/2');
    expect(out.performer.map((p) => p.reference)).toEqual(['Practitioner/7', 'urn:uuid:zzz']);
  });

  test('does not mutate its input', () => {
    const obs = { subject: { reference: 'urn:uuid:aaa' } };
    rewriteReferences(obs, map);
    expect(obs.subject.reference).toBe('urn:uuid:aaa');
  });

  test('leaves identifier values that look like a fullUrl alone', () => {
    const p = { identifier: [{ system: 'urn:ietf:rfc:3986', value: 'urn:uuid:aaa' }] };
    expect(rewriteReferences(p, map).identifier[0].value).toBe('urn:uuid:aaa');
  });

  test('collects every reference string', () => {
    const refs = collectReferences({ a: { reference: 'Patient?identifier=x|1' }, b: [{ c: { reference: 'urn:uuid:aaa' } }] });
    expect([...refs].sort()).toEqual(['Patient?identifier=x|1', 'urn:uuid:aaa']);
  });

  test('recognises conditional references', () => {
    expect(isConditionalReference('Patient?identifier=http://x|1')).toBe(true);
    expect(isConditionalReference('Patient/1')).toBe(false);
    expect(isConditionalReference('urn:uuid:aaa')).toBe(false);
  });
});
