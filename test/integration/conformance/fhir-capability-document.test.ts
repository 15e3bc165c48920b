import request from 'supertest';
import documented from '../../../conformance/fhir-capability-statement.json';
import { capabilitySurface, diffCapabilitySurface } from '../../../conformance/kit/capability-document';
import { startTestApp, type TestApp } from '../../helpers/test-app';

/**
 * conformance/fhir-capability-statement.json must say what GET /fhir/metadata says about
 * resources, interactions, operations and search parameters. When this fails, regenerate it:
 * tsx conformance/kit/capability-document.ts --base-url URL > conformance/fhir-capability-statement.json
 */
describe('conformance/fhir-capability-statement.json', () => {
  let t: TestApp;
  let served: Record<string, unknown>;

  beforeAll(async () => {
    t = await startTestApp();
    const res = await request(t.http).get('/fhir/metadata').set('accept', 'application/fhir+json');
    expect(res.status).toBe(200);
    served = res.body;
  });

  afterAll(async () => {
    await t?.close();
  });

  it('lists the resources, interactions, operations and search parameters the server serves', () => {
    expect(diffCapabilitySurface(capabilitySurface(documented as never), capabilitySurface(served as never))).toEqual([]);
  });

  it('describes the same server (FHIR version, formats, kind)', () => {
    expect({ fhirVersion: documented.fhirVersion, format: documented.format, kind: documented.kind, id: documented.id }).toEqual({
      fhirVersion: served.fhirVersion,
      format: served.format,
      kind: served.kind,
      id: served.id,
    });
  });

  it('the comparison notices a missing search parameter and an extra interaction', () => {
    const changed = structuredClone(served) as { rest: { resource: { type: string; interaction: { code: string }[]; searchParam: { name: string }[] }[] }[] };
    const study = changed.rest[0]!.resource.find((r) => r.type === 'ImagingStudy')!;
    study.searchParam = study.searchParam.filter((p) => p.name !== 'laterality');
    study.interaction.push({ code: 'patch' });
    expect(diffCapabilitySurface(capabilitySurface(changed as never), capabilitySurface(served as never)).sort()).toEqual([
      'ImagingStudy interactions: documented but not served: patch',
      'ImagingStudy search parameters: served but not documented: laterality:token',
    ]);
  });
});
