import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import request from 'supertest';
import { GenerateError, runGenerate, type GenerateOptions } from '../../../src/generate/generate';
import { planPopulation } from '../../../src/generate/population';
import { main } from '../../../src/main';
import { startTestApp, type TestApp } from '../../helpers/test-app';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const dcmjs = require('dcmjs');

/**
 * `imaging-lake generate` end to end: files on disk, and the same population sent to a running
 * server, where DICOM and FHIR meet on one Patient per MRN and a second run adds nothing.
 */
const BASE: Omit<GenerateOptions, 'out' | 'url' | 'token'> = {
  patients: 4,
  studiesPerPatient: 2,
  modalities: ['CT', 'MR', 'OPT', 'OP', 'OPV'],
  pixels: 'small',
  seed: 11,
  from: '20150101',
  to: '20251231',
  concurrency: 3,
  dicom: true,
  fhir: true,
  bundleSize: 3,
};

describe('imaging-lake generate', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'il-generate-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('--out writes Part 10 files, transaction Bundles and a summary that add up', async () => {
    const out = path.join(dir, 'files');
    const written: string[] = [];
    const write = jest.spyOn(process.stdout, 'write').mockImplementation((chunk) => {
      written.push(String(chunk));
      return true;
    });
    try {
      await main(['node', 'imaging-lake', 'generate', '--out', out, '--patients', '4', '--studies', '2', '--seed', '11', '--bundle-size', '3'], {});
    } finally {
      write.mockRestore();
    }
    const summary = JSON.parse(written.join(''));
    const files = fs.readdirSync(path.join(out, 'dicom'), { recursive: true }).map(String).filter((f) => f.endsWith('.dcm'));
    expect(files).toHaveLength(summary.instances);
    expect(summary.patients).toBe(4);
    expect(fs.readdirSync(path.join(out, 'fhir'))).toEqual(['bundle-000001.json', 'bundle-000002.json']);
    const bundle = JSON.parse(fs.readFileSync(path.join(out, 'fhir', 'bundle-000001.json'), 'utf8'));
    expect(bundle.entry.filter((e: { resource: { resourceType: string } }) => e.resource.resourceType === 'Patient')).toHaveLength(3);
    const bytes = fs.readFileSync(path.join(out, 'dicom', files[0]));
    const ds = dcmjs.data.DicomMessage.readFile(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
    const natural = dcmjs.data.DicomMetaDictionary.naturalizeDataset(ds.dict);
    expect(files[0].startsWith(natural.PatientID)).toBe(true);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8')).instances).toBe(summary.instances);
  });

  test('bad options exit with status 2 and say what is wrong; nothing is written', async () => {
    const errors: string[] = [];
    const write = jest.spyOn(process.stderr, 'write').mockImplementation((chunk) => {
      errors.push(String(chunk));
      return true;
    });
    const before = process.exitCode;
    try {
      for (const args of [['--patients', '0'], ['--modalities', 'CT,XA'], ['--dates', '20250101-20240101'], ['--pixels', 'huge'], ['--url', 'ftp://x']]) {
        process.exitCode = undefined;
        await main(['node', 'imaging-lake', 'generate', '--out', path.join(dir, 'never'), ...args], {});
        expect(process.exitCode).toBe(2);
      }
      process.exitCode = undefined;
      await main(['node', 'imaging-lake', 'generate'], {});
      expect(process.exitCode).toBe(2);
    } finally {
      write.mockRestore();
      process.exitCode = before;
    }
    expect(errors.join('')).toMatch(/--patients must be an integer of at least 1/);
    expect(errors.join('')).toMatch(/--modalities takes a comma list/);
    expect(errors.join('')).toMatch(/give --out DIR/);
    expect(fs.existsSync(path.join(dir, 'never'))).toBe(false);
  });

  test('an unreachable server is a clear GenerateError', async () => {
    await expect(runGenerate({ ...BASE, url: 'http://127.0.0.1:9', token: 't' })).rejects.toThrow(GenerateError);
    await expect(runGenerate({ ...BASE, url: 'http://127.0.0.1:9', token: 't' })).rejects.toThrow(/cannot reach http:\/\/127\.0\.0\.1:9\/fhir/);
  });

  describe('--url against a running server', () => {
    let t: TestApp;
    let server: http.Server;
    let url: string;
    beforeAll(async () => {
      t = await startTestApp();
      server = http.createServer(t.app.express);
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    afterAll(async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await t.close();
    });

    test('every visit is a study, every MRN one Patient that owns its ImagingStudies and Conditions; a re-run adds nothing', async () => {
      const summary = await runGenerate({ ...BASE, url, token: t.adminToken });
      const planned = [...planPopulation({ patients: BASE.patients, studiesPerPatient: BASE.studiesPerPatient, modalities: BASE.modalities, seed: BASE.seed, from: BASE.from, to: BASE.to })];
      expect(summary.studies).toBe(planned.reduce((n, p) => n + p.studies.length, 0));

      const studies = await request(t.http).get('/dicomweb/studies?limit=1000').set('Accept', 'application/dicom+json');
      expect(studies.status).toBe(200);
      expect(studies.body).toHaveLength(summary.studies);
      const instances = studies.body.reduce((n: number, s: Record<string, { Value: number[] }>) => n + s['00201208'].Value[0], 0);
      expect(instances).toBe(summary.instances);

      for (const p of planned) {
        const qido = await request(t.http).get(`/dicomweb/studies?PatientID=${p.mrn}`).set('Accept', 'application/dicom+json');
        expect((qido.body as unknown[]).length).toBe(p.studies.length);
        const found = await request(t.http).get(`/fhir/Patient?identifier=${encodeURIComponent(`urn:imaging-lake:issuer:${p.institution.issuer}|${p.mrn}`)}`);
        expect(found.body.entry).toHaveLength(1);
        const patientRef = `Patient/${found.body.entry[0].resource.id}`;
        expect(found.body.entry[0].resource.name[0]).toMatchObject({ family: p.family, given: [p.given] });
        const conditions = await request(t.http).get(`/fhir/Condition?subject=${patientRef}`);
        expect((conditions.body.entry ?? []).map((e: { resource: { code: { coding: Array<{ code: string }> } } }) => e.resource.code.coding[0].code).sort()).toEqual(
          p.conditions.map((c) => c.code).sort(),
        );
        const imaging = await request(t.http).get(`/fhir/ImagingStudy?subject=${patientRef}`);
        expect(imaging.body.entry ?? []).toHaveLength(p.studies.length);
      }

      // Ophthalmic keys are searchable: OCT volumes of the right eye by image laterality and device type.
      const oct = planned.flatMap((p) => p.studies).filter((s) => s.modality === 'OPT' && s.eyes.includes('R'));
      const octRight = await request(t.http).get('/dicomweb/instances?Modality=OPT&ImageLaterality=R').set('Accept', 'application/dicom+json');
      expect(octRight.status).toBe(200);
      expect((octRight.body as unknown[]).length).toBe(oct.length);

      // The same seed again: the same UIDs and Condition identifiers, so nothing new.
      await runGenerate({ ...BASE, url, token: t.adminToken });
      const again = await request(t.http).get('/dicomweb/studies?limit=1000').set('Accept', 'application/dicom+json');
      expect(again.body).toHaveLength(summary.studies);
      const allConditions = await request(t.http).get('/fhir/Condition?_summary=count');
      expect(allConditions.body.total).toBe(summary.conditions);
      const allPatients = await request(t.http).get('/fhir/Patient?_summary=count');
      expect(allPatients.body.total).toBe(BASE.patients);
    });
  });
});
