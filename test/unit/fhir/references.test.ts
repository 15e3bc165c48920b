import { collectReferences, findReferences, isConditionalReference, rewriteReferenceSites, rewriteReferences } from '../../../src/fhir/bundle/references';

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

  test('copies only what leads to a rewritten reference', () => {
    const obs = {
      code: { coding: [{ system: 'http://loinc.org', code: '1' }] },
      subject: { reference: 'urn:uuid:aaa' },
      performer: [{ reference: 'urn:uuid:bbb' }, { reference: 'Practitioner/7' }, { reference: 'urn:uuid:aaa' }],
    };
    const out = rewriteReferenceSites(obs, findReferences(obs), map);
    expect(out).toEqual({
      code: obs.code,
      subject: { reference: 'Patient/1' },
      performer: [{ reference: 'Encounter/2' }, { reference: 'Practitioner/7' }, { reference: 'Patient/1' }],
    });
    expect(out.code).toBe(obs.code);
    expect(out.performer[1]).toBe(obs.performer[1]);
    expect(obs.performer[0].reference).toBe('urn:uuid:bbb');
  });

  test('returns the value itself when no reference changes', () => {
    const obs = { subject: { reference: 'Patient/9' } };
    expect(rewriteReferenceSites(obs, findReferences(obs), map)).toBe(obs);
  });

  test('finds references in arrays nested in arrays', () => {
    const v = { a: [[{ reference: 'urn:uuid:aaa' }]], contained: [{ resourceType: 'Provenance', target: [{ reference: 'urn:uuid:bbb' }] }] };
    expect(findReferences(v)).toEqual([
      { path: ['a', 0, 0], reference: 'urn:uuid:aaa' },
      { path: ['contained', 0, 'target', 0], reference: 'urn:uuid:bbb' },
    ]);
    expect(rewriteReferences(v, map).contained[0].target[0].reference).toBe('Encounter/2');
  });
});
