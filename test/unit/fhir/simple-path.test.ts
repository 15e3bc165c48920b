import { evalFhirPathTyped, toTypedValue } from '@medplum/core';
import { loadFhirDefinitions } from '../../../src/fhir/definitions';
import { evaluateSimplePaths } from '../../../src/fhir/search/simple-path';
import fs from 'node:fs';
import path from 'node:path';

const fhirData = (...parts: string[]) => JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../../../shared/data/fhir', ...parts), 'utf8'));

const defs = loadFhirDefinitions();
const param = (rt: string, code: string) => defs.searchParams(rt).get(code)!;

describe('compiled simple paths for SearchParameter expressions', () => {
  test('plain navigation compiles with the element type from the StructureDefinition', () => {
    expect(param('Patient', 'family').simple).toEqual([{ keys: ['name', 'family'], type: 'string', filter: undefined }]);
  });

  test('a cast picks the choice key', () => {
    expect(param('Observation', 'value-quantity').simple?.map((p) => p.keys.join('.'))).toEqual(['valueQuantity', 'valueSampledData']);
  });

  test('a choice element without a cast covers every type', () => {
    expect(param('Observation', 'date').simple?.map((p) => p.keys[0])).toEqual(['effectiveDateTime', 'effectivePeriod', 'effectiveTiming', 'effectiveInstant']);
  });

  test('where(resolve() is Patient) keeps only Patient references', () => {
    const obs = { resourceType: 'Observation', subject: { reference: 'Group/g1' } };
    expect(evaluateSimplePaths(obs, param('Observation', 'patient').simple!)).toEqual([]);
    expect(evaluateSimplePaths({ ...obs, subject: { reference: 'Patient/p1' } }, param('Observation', 'patient').simple!)).toHaveLength(1);
  });

  test('expressions with functions stay with the FHIRPath engine', () => {
    expect(param('Patient', 'deceased').simple).toBeUndefined();
    expect(param('Patient', 'deceased').parsed).toBeDefined();
  });

  test('give the same values as FHIRPath on every R4 example resource', () => {
    let compared = 0;
    for (const file of ['Patient-example.json', 'Observation-example.json', 'ImagingStudy-example.json', 'Condition-f201.json', 'Encounter-example.json', 'Group-101.json', 'DiagnosticReport-ultrasound.json']) {
      const resource = fhirData('r4-examples', file);
      defs.ensureTypeLoaded(resource.resourceType);
      const root = toTypedValue(resource);
      for (const p of defs.searchParams(resource.resourceType).values()) {
        if (!p.simple || p.code === '_id' || p.expression?.includes('.as(')) continue;
        const ours = evaluateSimplePaths(resource, p.simple).map((v) => JSON.stringify(v.value));
        const theirs = evalFhirPathTyped(p.parsed!, [root], { '%resource': root }).map((v) => JSON.stringify(v.value));
        expect([p.code, ours]).toEqual([p.code, theirs]);
        compared++;
      }
    }
    expect(compared).toBeGreaterThan(150);
  });
});
