import fs from 'node:fs';
import request from 'supertest';
import { sharedData } from '../../helpers/test-app';
import { startFhirTestApp, type FhirTestApp } from './helpers/fhir-app';

/**
 * Repeated transaction Bundle ingest: the largest Synthea bundle (297 resources) posted again and
 * again, one after the other and several at once; every one must commit and every resource be
 * stored (new ids each time). It prints resources/s for a glance; the speed target is measured
 * by bench/fhir.ts, never asserted here.
 */
describe('repeated transaction Bundle ingest', () => {
  let f: FhirTestApp;
  const text = fs.readFileSync(sharedData('fhir', 'synthea-r4', 'Estrella_Daugherty_ecc5586f-45d1-4fb2-bb4c-3fce1b7b4456.json'), 'utf8');
  const size = (JSON.parse(text).entry as unknown[]).length;
  const post = () => request(f.express).post('/fhir').set('Content-Type', 'application/fhir+json').set('Prefer', 'return=minimal').send(text);

  beforeAll(async () => {
    f = await startFhirTestApp();
    expect((await post()).status).toBe(200); // warm-up: lazy type loading and JIT
  }, 120_000);
  afterAll(async () => {
    await f.close();
  });

  test('sequential and concurrent transaction ingest', async () => {
    const rounds = 4;
    let t0 = Date.now();
    for (let i = 0; i < rounds; i++) expect((await post()).status).toBe(200);
    const sequential = (rounds * size * 1000) / (Date.now() - t0);
    t0 = Date.now();
    const results = await Promise.all(Array.from({ length: rounds }, () => post()));
    for (const r of results) expect(r.status).toBe(200);
    const concurrent = (rounds * size * 1000) / (Date.now() - t0);
    process.stdout.write(`FHIR transaction ingest: ${Math.round(sequential)} resources/s sequential, ${Math.round(concurrent)} resources/s with ${rounds} bundles in flight\n`);
    const stored = await f.t.app.db.knex('fhir_resource').count<{ count: string }[]>('* as count');
    expect(Number(stored[0].count)).toBe((2 * rounds + 1) * size);
  }, 120_000);
});
