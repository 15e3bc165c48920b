import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { AddressInfo } from 'node:net';
import { startFhirTestApp, type FhirTestApp } from './helpers/fhir-app';

/** A real FHIR client (fhir-kit-client, ESM) against the server over HTTP. */
describe('fhir-kit-client against the server', () => {
  let f: FhirTestApp;
  let server: http.Server;
  let client: any;

  beforeAll(async () => {
    f = await startFhirTestApp();
    server = http.createServer(f.express);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    // fhir-kit-client 2 is ESM-only; load it with Node's own import(), untouched by the CJS transform.
    const esmImport = new Function('specifier', 'return import(specifier)') as (s: string) => Promise<any>;
    const { Client } = await esmImport(pathToFileURL(path.resolve(__dirname, '../../../node_modules/fhir-kit-client/dist/index.js')).href);
    client = new Client({ baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir` });
  }, 120_000);
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    await f.close();
  });

  test('reads the CapabilityStatement', async () => {
    const cs = await client.capabilityStatement();
    expect(cs.fhirVersion).toBe('4.0.1');
  });

  test('create, read, update, search and delete a Patient', async () => {
    const created = await client.create({ resourceType: 'Patient', body: { resourceType: 'Patient', name: [{ family: 'Kit' }] } });
    expect(created.meta.versionId).toBe('1');
    const read = await client.read({ resourceType: 'Patient', id: created.id });
    expect(read.name[0].family).toBe('Kit');
    const updated = await client.update({ resourceType: 'Patient', id: created.id, body: { ...read, gender: 'other' } });
    expect(updated.meta.versionId).toBe('2');
    const found = await client.search({ resourceType: 'Patient', searchParams: { family: 'kit', gender: 'other' } });
    expect(found.entry.map((e: any) => e.resource.id)).toEqual([created.id]);
    await client.delete({ resourceType: 'Patient', id: created.id });
    await expect(client.read({ resourceType: 'Patient', id: created.id })).rejects.toMatchObject({ response: { status: 410 } });
  });

  test('follows next-page links', async () => {
    for (let i = 0; i < 3; i++) await client.create({ resourceType: 'Group', body: { resourceType: 'Group', type: 'person', actual: true, name: `kit${i}` } });
    const first = await client.search({ resourceType: 'Group', searchParams: { name: 'kit', _count: 2 } });
    const second = await client.nextPage({ bundle: first });
    expect([...first.entry, ...second.entry].map((e: any) => e.resource.name).sort()).toEqual(['kit0', 'kit1', 'kit2']);
  });

  test('posts a transaction', async () => {
    const res = await client.transaction({
      body: { resourceType: 'Bundle', type: 'transaction', entry: [{ fullUrl: 'urn:uuid:6f0c2e1c-5b8e-4a53-9a55-000000000001', resource: { resourceType: 'Patient' }, request: { method: 'POST', url: 'Patient' } }] },
    });
    expect(res.entry[0].response.status).toBe('201 Created');
  });
});
