import { OperationOutcomeError } from '../../../src/fhir/outcome';
import { dateBounds, parseAuditEventQuery } from '../../../src/fhir/resources/audit-event-search';

const iso = (ms: number) => new Date(ms).toISOString();
const q = (query: Record<string, string>, options = {}) => parseAuditEventQuery(Object.fromEntries(Object.entries(query).map(([k, v]) => [k, [v]])), options);
const errorOf = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    return err as OperationOutcomeError;
  }
  throw new Error('no error');
};

describe('AuditEvent date prefixes on an instant', () => {
  test('eq is the implicit range of the value', () => {
    const b = dateBounds('2026-01-11', 'date');
    expect([iso(b.since), iso(b.until)]).toEqual(['2026-01-11T00:00:00.000Z', '2026-01-12T00:00:00.000Z']);
  });
  test('gt starts after the range, ge at its start', () => {
    expect(iso(dateBounds('gt2026-01-11', 'date').since)).toBe('2026-01-12T00:00:00.000Z');
    expect(iso(dateBounds('ge2026-01-11', 'date').since)).toBe('2026-01-11T00:00:00.000Z');
  });
  test('lt ends before the range, le after it', () => {
    expect(iso(dateBounds('lt2026-01', 'date').until)).toBe('2026-01-01T00:00:00.000Z');
    expect(iso(dateBounds('le2026-01', 'date').until)).toBe('2026-02-01T00:00:00.000Z');
  });
  test('ne is a 400', () => expect(errorOf(() => dateBounds('ne2026', 'date')).status).toBe(400));
});

describe('AuditEvent query mapping', () => {
  test('tokens and references map to the trail keys', () => {
    expect(q({ type: 'http://dicom.nema.org/resources/ontology/DCM|110112', subtype: 'search-type', agent: 'u1', entity: 'ImagingStudy/s', patient: '7', outcome: '4', action: 'E' }).params).toEqual({
      type: '110112', subtype: 'search-type', agent: 'u1', entity: 'ImagingStudy/s', patient: 'Patient/7', outcome: '4', action: 'E',
    });
  });
  test('an absolute reference to this server is made relative', () => expect(q({ entity: 'https://h/fhir/Condition/1' }, { baseUrl: 'https://h/fhir' }).params.entity).toBe('Condition/1'));
  test('a type system that does not own the code empties the answer', () => expect(q({ type: 'http://dicom.nema.org/resources/ontology/DCM|rest' }).empty).toBe(true));
  test('two dates intersect', () => {
    const p = parseAuditEventQuery({ date: ['ge2026-01-01', 'lt2026-02-01'] }).params;
    expect([p.since, p.until]).toEqual(['2026-01-01T00:00:00.000Z', '2026-02-01T00:00:00.000Z']);
  });
  test('disjoint dates empty the answer', () => expect(parseAuditEventQuery({ date: ['lt2026-01-01', 'gt2026-02-01'] }).empty).toBe(true));
  test('_count is capped at 1000 and defaults to 20', () => expect([q({ _count: '5000' }).count, q({}).count]).toEqual([1000, 20]));
  test('an outcome that is not an AuditEvent outcome code is a 400', () => expect(errorOf(() => q({ outcome: '3' })).outcome.issue?.[0].diagnostics).toBe("'3' is not an AuditEvent outcome code"));
  test(':not is a 400', () => expect(errorOf(() => q({ 'type:not': 'rest' })).status).toBe(400));
  test('_id cannot be combined with filters', () => expect(errorOf(() => q({ _id: 'a', agent: 'b' })).status).toBe(400));
  test('unsupported result parameters are listed as ignored', () => expect(q({ _include: 'AuditEvent:agent' }).ignored).toEqual([{ name: '_include', reason: 'Not supported on AuditEvent' }]));
});
