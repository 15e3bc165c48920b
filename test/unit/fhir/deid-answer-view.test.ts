import type { Knex } from 'knex';
import type { Resource } from '@medplum/fhirtypes';
import { loadFhirDefinitions } from '../../../src/fhir/definitions';
import { createDeidView } from '../../../src/fhir/deid/deid-view';

/**
 * The answer transformer alone, without a privacy service (not wired): it fails closed, so
 * patient-linked dates are hidden rather than shown unshifted, and every kind of answer Bundle is
 * walked. No database is touched on this path.
 */
describe('createDeidView().transformAnswer without a privacy service', () => {
  const S = 'PHI_SENTINEL';
  const view = createDeidView({ defs: loadFhirDefinitions(), db: undefined as unknown as Knex, projects: ['p'], now: () => new Date('2026-11-22T00:00:00Z') });
  const patient = { resourceType: 'Patient', id: 'p1', name: [{ family: S }], birthDate: '1970-01-01', identifier: [{ system: 'urn:mrn', value: S }] } as Resource;

  test('a read loses its Last-Modified header and its patient dates', async () => {
    const out = await view.transformAnswer({ status: 200, headers: { ETag: 'W/"1"', 'Last-Modified': 'Thu, 01 Jan 2026 00:00:00 GMT' }, body: patient });
    expect(out.headers).toEqual({ ETag: 'W/"1"' });
    expect(JSON.stringify(out.body)).not.toContain(S);
    expect((out.body as { birthDate?: string }).birthDate).toBeUndefined();
    expect((out.body as { identifier?: unknown }).identifier).toBeUndefined();
  });

  test('batch responses, nested search Bundles and stored Bundles are all masked; outcomes pass', async () => {
    const stored = { resourceType: 'Bundle', id: 'doc', type: 'collection', timestamp: '2020-01-01T00:00:00Z', entry: [{ resource: { ...patient, id: 'p2' } }] } as Resource;
    const body = {
      resourceType: 'Bundle',
      type: 'batch-response',
      entry: [
        { resource: patient, response: { status: '200 OK', lastModified: '2026-01-01T00:00:00Z' } },
        { resource: { resourceType: 'Bundle', type: 'searchset', entry: [{ resource: { resourceType: 'Condition', id: 'c', subject: { reference: 'Patient/p1', display: S }, onsetDateTime: '2020-01-01' } }, { resource: stored }] }, response: { status: '200 OK' } },
        { response: { status: '400 Bad Request', outcome: { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invalid', diagnostics: 'kept' }] } } },
      ],
    } as Resource;
    const out = (await view.transformAnswer({ status: 200, headers: {}, body })).body as any;
    expect(JSON.stringify(out)).not.toContain(S);
    expect(out.entry[0].response).toEqual({ status: '200 OK' });
    const inner = out.entry[1].resource.entry;
    expect(inner[0].resource).toMatchObject({ resourceType: 'Condition', subject: { reference: 'Patient/p1' } });
    expect(inner[0].resource.onsetDateTime).toBeUndefined();
    expect(inner[1].resource.timestamp).toBeUndefined();
    expect(inner[1].resource.entry[0].resource.birthDate).toBeUndefined();
    expect(out.entry[2].response.outcome.issue[0].diagnostics).toBe('kept');
  });

  test('resources about no patient keep their dates; free text still goes', async () => {
    const org = { resourceType: 'Practitioner', id: 'x', name: [{ family: S }], birthDate: '1960-02-03', meta: { lastUpdated: '2026-01-01T00:00:00.000Z' } } as Resource;
    const out = (await view.transformAnswer({ status: 200, headers: {}, body: org })).body as any;
    expect(out.name).toBeUndefined();
    expect(out.birthDate).toBe('1960-02-03');
    expect(out.meta.lastUpdated).toBe('2026-01-01T00:00:00.000Z');
  });
});
