import { loadFhirDefinitions } from '../../../src/fhir/definitions';
import { OperationOutcomeError } from '../../../src/fhir/outcome';
import { parseSearchRequest } from '../../../src/fhir/search/search-request';

const defs = loadFhirDefinitions();
const parse = (rt: string, q: Record<string, string | string[]>, strict = false) =>
  parseSearchRequest(defs, rt, Object.fromEntries(Object.entries(q).map(([k, v]) => [k, Array.isArray(v) ? v : [v]])), { strict });
const status = (fn: () => unknown) => {
  try {
    fn();
    return 0;
  } catch (e) {
    return e instanceof OperationOutcomeError ? e.status : -1;
  }
};

describe('search request parsing (FHIR R4 3.1.1)', () => {
  test('comma values are ORed within one filter; repeats are separate (ANDed) filters', () => {
    const r = parse('Patient', { gender: 'male,female', family: ['smith', 'jones'] });
    expect(r.filters.map((f) => [f.code, f.values])).toEqual([
      ['gender', ['male', 'female']],
      ['family', ['smith']],
      ['family', ['jones']],
    ]);
  });

  test('reads modifiers', () => {
    const r = parse('Patient', { 'family:exact': 'Smith', 'identifier:not': 'x|1', 'birthdate:missing': 'true' });
    expect(r.filters.map((f) => f.modifier)).toEqual(['exact', 'not', 'missing']);
  });

  test('an unsupported modifier is a 400', () => {
    expect(status(() => parse('Patient', { 'family:below': 'x' }))).toBe(400);
  });

  test(':missing only takes true or false', () => {
    expect(status(() => parse('Patient', { 'gender:missing': 'yes' }))).toBe(400);
  });

  test('a typed chain resolves the chained parameter on the target type', () => {
    const r = parse('Observation', { 'subject:Patient.identifier': 'urn:mrn|7' });
    expect(r.filters[0].chain?.map((c) => [c.targetType, c.filter.code])).toEqual([['Patient', 'identifier']]);
  });

  test('an untyped chain uses the reference targets that define the parameter', () => {
    const r = parse('Observation', { 'patient.name': 'peter' });
    expect(r.filters[0].chain?.map((c) => c.targetType)).toEqual(['Patient']);
  });

  test('chaining a non-reference parameter is a 400', () => {
    expect(status(() => parse('Observation', { 'code.name': 'x' }))).toBe(400);
  });

  test('unknown parameters are ignored and reported under lenient handling', () => {
    const r = parse('Patient', { foo: 'bar', family: 'x' });
    expect(r.ignored.map((i) => i.name)).toEqual(['foo']);
    expect(r.applied).toEqual([['family', 'x']]);
  });

  test('unknown parameters are a 400 under strict handling', () => {
    expect(status(() => parse('Patient', { foo: 'bar' }, true))).toBe(400);
  });

  test('composite parameters are reported as unsupported', () => {
    const r = parse('Observation', { 'code-value-quantity': 'x$5' });
    expect(r.ignored[0].reason).toMatch(/composite/);
  });

  test('_sort reads several keys and - for descending', () => {
    const r = parse('Patient', { _sort: 'family,-birthdate,_id' });
    expect(r.sort.map((s) => [s.code, s.descending])).toEqual([
      ['family', false],
      ['birthdate', true],
      ['_id', false],
    ]);
  });

  test('_count is capped and must be a number', () => {
    expect(parse('Patient', { _count: '5000' }).count).toBe(1000);
    expect(status(() => parse('Patient', { _count: 'many' }))).toBe(400);
  });

  test('_include and _revinclude with :iterate', () => {
    const r = parse('Observation', { _include: 'Observation:patient', '_revinclude:iterate': 'Provenance:target' });
    expect(r.includes).toEqual([{ resourceType: 'Observation', param: 'patient', targetType: undefined, iterate: false, wildcard: false }]);
    expect(r.revincludes[0]).toMatchObject({ resourceType: 'Provenance', param: 'target', iterate: true });
  });

  test('_include of a non-reference parameter is reported', () => {
    const r = parse('Observation', { _include: 'Observation:code' });
    expect(r.includes).toEqual([]);
    expect(r.ignored[0].name).toBe('_include=Observation:code');
  });

  test('_summary, _total and _elements', () => {
    const r = parse('Patient', { _summary: 'count', _total: 'accurate', _elements: 'Patient.name,gender' });
    expect([r.summary, r.total, r.elements]).toEqual(['count', 'accurate', ['name', 'gender']]);
  });
});
