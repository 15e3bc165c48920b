import request from 'supertest';
import { withTransaction } from '../../../src/db/database';
import { findResourcesInTransaction, writeResourceInTransaction } from '../../../src/fhir/write-resource';
import { OperationOutcomeError } from '../../../src/fhir/outcome';
import { fhirData, startFhirTestApp, uniq, type FhirTestApp } from './helpers/fhir-app';

/** The seam the DICOM ingest uses: writing a resource inside another transaction. */
describe('writeResourceInTransaction', () => {
  let f: FhirTestApp;
  const knex = () => f.t.app.db.knex;
  const study = (uid: string, id?: string) => ({
    resourceType: 'ImagingStudy' as const,
    ...(id ? { id } : {}),
    identifier: [{ system: 'urn:dicom:uid', value: `urn:oid:${uid}` }],
    status: 'available' as const,
    subject: { reference: 'Patient/p1' },
    started: '2024-05-01T10:00:00Z',
  });

  beforeAll(async () => {
    f = await startFhirTestApp();
  }, 120_000);
  afterAll(async () => {
    await f.close();
  });

  test('creates a resource with history and index rows, visible to FHIR search after commit', async () => {
    const uid = `1.2.${Date.now()}`;
    const written = await withTransaction(knex(), (trx) => writeResourceInTransaction(trx, study(uid)));
    expect([written.created, written.versionId]).toEqual([true, 1]);
    const res = await request(f.express).get(`/fhir/ImagingStudy?identifier=urn:dicom:uid|urn:oid:${uid}`);
    expect(res.body.entry.map((e: any) => e.resource.id)).toEqual([written.resource.id]);
    expect((await request(f.express).get(`/fhir/ImagingStudy/${written.resource.id}/_history`)).body.entry).toHaveLength(1);
  });

  test('writing the same id again is an update with the next version', async () => {
    const id = `st-${uniq()}`;
    await withTransaction(knex(), (trx) => writeResourceInTransaction(trx, study('1.2.3', id)));
    const second = await withTransaction(knex(), (trx) => writeResourceInTransaction(trx, { ...study('1.2.3', id), status: 'cancelled' }));
    expect([second.created, second.versionId]).toEqual([false, 2]);
    expect((await request(f.express).get(`/fhir/ImagingStudy?_id=${id}&status=cancelled`)).body.entry).toHaveLength(1);
  });

  test('nothing is written when the enclosing transaction rolls back', async () => {
    const uid = `9.9.${Date.now()}`;
    await expect(
      withTransaction(knex(), async (trx) => {
        await writeResourceInTransaction(trx, study(uid));
        throw new Error('DICOM ingest failed after the FHIR write');
      }),
    ).rejects.toThrow('DICOM ingest failed');
    expect((await request(f.express).get(`/fhir/ImagingStudy?identifier=urn:dicom:uid|urn:oid:${uid}`)).body.entry).toEqual([]);
  });

  test('an invalid resource is refused with a 422 OperationOutcomeError', async () => {
    const err = await withTransaction(knex(), (trx) => writeResourceInTransaction(trx, { resourceType: 'ImagingStudy' } as any)).catch((e) => e);
    expect(err).toBeInstanceOf(OperationOutcomeError);
    expect((err as OperationOutcomeError).status).toBe(422);
  });

  test('finds an existing resource by identifier inside the transaction', async () => {
    const uid = `4.4.${Date.now()}`;
    const found = await withTransaction(knex(), async (trx) => {
      await writeResourceInTransaction(trx, study(uid));
      return findResourcesInTransaction(trx, 'ImagingStudy', `identifier=urn:dicom:uid|urn:oid:${uid}`);
    });
    expect(found).toHaveLength(1);
  });

  test('the server may write AuditEvents that clients may only read and search', async () => {
    const audit = fhirData('r4-examples', 'AuditEvent-example.json');
    const written = await withTransaction(knex(), (trx) => writeResourceInTransaction(trx, { ...audit, id: `ae-${uniq()}` }));
    expect((await request(f.express).get(`/fhir/AuditEvent/${written.resource.id}`)).status).toBe(200);
    expect((await request(f.express).get(`/fhir/AuditEvent?_id=${written.resource.id}&type=http://dicom.nema.org/resources/ontology/DCM|110100`)).body.entry).toHaveLength(1);
    const del = await request(f.express).delete(`/fhir/AuditEvent/${written.resource.id}`);
    expect(del.status).toBe(405);
  });
});
