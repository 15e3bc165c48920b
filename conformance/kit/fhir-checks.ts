import { randomBytes } from 'node:crypto';
import { KitHttp, mediaType, parseJson } from './http';
import { expect, Report, SkipCheck } from './report';

const FHIR_JSON = 'application/fhir+json';

interface FhirResource {
  resourceType?: string;
  id?: string;
  [key: string]: unknown;
}

/**
 * The FHIR R4 checks: the CapabilityStatement (3.1.0.10) and a Patient create, read, search
 * and delete round trip (RESTful API 3.1.0), plus a read of a missing resource.
 */
export async function runFhirChecks(report: Report, http: KitHttp, prefix: string, opts: { hasToken: boolean }): Promise<void> {
  const check = (name: string, fn: () => Promise<void>, o?: { oursOnly?: boolean }) => report.check('fhir', name, fn, o);
  const headers = { accept: FHIR_JSON };
  const system = 'urn:imaging-lake:conformance-kit';
  const value = `kit-${randomBytes(6).toString('hex')}`;
  let id: string | undefined;
  const needCreated = () => {
    if (!id) throw new SkipCheck('the create check did not pass');
  };

  await check('GET metadata: a CapabilityStatement for FHIR 4.0.x with Patient create/read/search/delete', async () => {
    const res = await http.request('GET', `${prefix}/metadata`, { headers });
    expect(res.status === 200, `status ${res.status}`);
    const cs = parseJson(res, 'metadata') as { resourceType?: string; fhirVersion?: string; rest?: { resource?: { type: string; interaction?: { code: string }[] }[] }[] };
    expect(cs.resourceType === 'CapabilityStatement', `resourceType ${cs.resourceType}`);
    expect(/^4\.0\./.test(cs.fhirVersion ?? ''), `fhirVersion ${cs.fhirVersion}`);
    const patient = cs.rest?.flatMap((r) => r.resource ?? []).find((r) => r.type === 'Patient');
    expect(patient, 'no Patient resource in rest.resource');
    const codes = new Set((patient.interaction ?? []).map((i) => i.code));
    const missing = ['create', 'read', 'search-type', 'delete'].filter((c) => !codes.has(c));
    expect(missing.length === 0, `Patient lacks interaction(s) ${missing.join(', ')}`);
  });

  await check('create Patient: 201 with Location and the stored resource', async () => {
    const patient = { resourceType: 'Patient', identifier: [{ system, value }], name: [{ family: 'Kit', given: ['Conformance'] }], gender: 'other', birthDate: '1970-01-01' };
    const res = await http.request('POST', `${prefix}/Patient`, { headers: { ...headers, 'content-type': FHIR_JSON }, body: JSON.stringify(patient) });
    expect(res.status === 201, `status ${res.status}, expected 201: ${res.body.subarray(0, 200).toString()}`);
    expect(res.headers.get('location')?.includes('/Patient/'), `Location ${res.headers.get('location')}`);
    const body = parseJson(res, 'create') as FhirResource;
    expect(body.resourceType === 'Patient' && typeof body.id === 'string', 'the body is not the created Patient');
    id = body.id;
  });

  await check('read Patient: 200 with the same identifier', async () => {
    needCreated();
    const res = await http.request('GET', `${prefix}/Patient/${id}`, { headers });
    expect(res.status === 200, `status ${res.status}`);
    expect(mediaType(res) === FHIR_JSON || mediaType(res) === 'application/json', `Content-Type ${res.headers.get('content-type')}`);
    const body = parseJson(res, 'read') as FhirResource & { identifier?: { system?: string; value?: string }[] };
    expect(body.id === id, `id ${body.id}`);
    expect(body.identifier?.some((i) => i.system === system && i.value === value), 'identifier not returned');
  });

  await check('search Patient by identifier: a searchset Bundle with the one match', async () => {
    needCreated();
    const res = await http.request('GET', `${prefix}/Patient?identifier=${encodeURIComponent(`${system}|${value}`)}`, { headers });
    expect(res.status === 200, `status ${res.status}`);
    const bundle = parseJson(res, 'search') as { resourceType?: string; type?: string; entry?: { resource?: FhirResource }[] };
    expect(bundle.resourceType === 'Bundle' && bundle.type === 'searchset', `not a searchset Bundle (${bundle.resourceType}/${bundle.type})`);
    const ids = (bundle.entry ?? []).map((e) => e.resource?.id);
    expect(ids.length === 1 && ids[0] === id, `entries ${JSON.stringify(ids)}, expected [${id}]`);
  });

  await check('delete Patient: then read gives 404 or 410', async () => {
    needCreated();
    const del = await http.request('DELETE', `${prefix}/Patient/${id}`, { headers });
    expect(del.status === 200 || del.status === 202 || del.status === 204, `DELETE status ${del.status}`);
    const res = await http.request('GET', `${prefix}/Patient/${id}`, { headers });
    expect(res.status === 404 || res.status === 410, `read after delete: status ${res.status}`);
  });

  await check('read a missing Patient: 404 with an OperationOutcome', async () => {
    const res = await http.request('GET', `${prefix}/Patient/kit-missing-${randomBytes(6).toString('hex')}`, { headers });
    expect(res.status === 404, `status ${res.status}`);
    const body = parseJson(res, 'error') as FhirResource;
    expect(body.resourceType === 'OperationOutcome', `resourceType ${body.resourceType}`);
  });

  await check('search without a token is refused with 401', async () => {
    if (!opts.hasToken) throw new SkipCheck('no --token given');
    const res = await http.request('GET', `${prefix}/Patient`, { headers, anonymous: true });
    expect(res.status === 401, `status ${res.status}, expected 401`);
  }, { oursOnly: true });
}
