import { checkRequestContentType, negotiateResponseType } from '../../../src/fhir/http/format';
import { parseETagVersion, parsePrefer, parseQueryString } from '../../../src/fhir/http/fhir-request';

const statusOf = (fn: () => unknown) => {
  try {
    fn();
    return 0;
  } catch (e) {
    return (e as { status: number }).status;
  }
};

describe('FHIR HTTP details', () => {
  test('answers application/fhir+json by default', () => {
    expect(negotiateResponseType(undefined, undefined)).toBe('application/fhir+json; charset=utf-8');
    expect(negotiateResponseType(undefined, '*/*')).toBe('application/fhir+json; charset=utf-8');
  });
  test('answers application/json to a client that asks only for it', () => {
    expect(negotiateResponseType(undefined, 'application/json')).toBe('application/json; charset=utf-8');
  });
  test('_format=json overrides an XML Accept', () => {
    expect(negotiateResponseType('json', 'application/fhir+xml')).toBe('application/fhir+json; charset=utf-8');
  });
  test('XML in Accept or _format is 406', () => {
    expect(statusOf(() => negotiateResponseType(undefined, 'application/fhir+xml'))).toBe(406);
    expect(statusOf(() => negotiateResponseType('xml', undefined))).toBe(406);
  });
  test('an XML body is 415; a form is allowed only for _search', () => {
    expect(statusOf(() => checkRequestContentType('application/fhir+xml', false))).toBe(415);
    expect(statusOf(() => checkRequestContentType('application/x-www-form-urlencoded', false))).toBe(415);
    expect(statusOf(() => checkRequestContentType('application/x-www-form-urlencoded', true))).toBe(0);
    expect(statusOf(() => checkRequestContentType('application/fhir+json; charset=utf-8', false))).toBe(0);
  });
  test('Prefer: return and handling', () => {
    expect(parsePrefer('return=minimal')).toEqual({ return: 'minimal' });
    expect(parsePrefer('handling=strict, return=OperationOutcome')).toEqual({ handling: 'strict', return: 'OperationOutcome' });
    expect(parsePrefer(undefined)).toEqual({});
  });
  test('ETag versions: W/"3", "3" and garbage', () => {
    expect(parseETagVersion('W/"3"')).toBe(3);
    expect(parseETagVersion('"12"')).toBe(12);
    expect(parseETagVersion('nope')).toBeNaN();
  });
  test('query strings keep repeated keys in order', () => {
    expect(parseQueryString('?a=1&b=x&a=2')).toEqual({ a: ['1', '2'], b: ['x'] });
  });
});
