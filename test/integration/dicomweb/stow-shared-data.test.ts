import fs from 'node:fs';
import zlib from 'node:zlib';
import request from 'supertest';
import { buildMultipart } from '../../helpers/multipart-body';
import { readManifestDicomFiles, type ManifestDicomFile } from '../../helpers/manifest';
import { sharedData, startTestApp, type TestApp } from '../../helpers/test-app';

/**
 * Every DICOM file that shared/data/MANIFEST.md lists is sent alone through STOW-RS: valid
 * storage instances are stored, everything else gets a PS3.4 failure reason, never a 5xx.
 */

// Files whose outcome is not "stored", with the reason (see src/dicom/validate-instance.ts).
const EXPECTED_FAILURES: Record<string, { reason: number; why: string }> = {
  'dicom/malformed/orthanc__2026-05-26-oob-monochrome-65535.dcm': { reason: 0xc000, why: 'declares 65535x65535 pixels it does not contain' },
  'dicom/malformed/pydicom__MR_truncated.dcm': { reason: 0xc000, why: 'pixel data cut short' },
  'dicom/malformed/pydicom__no_meta.dcm': { reason: 0xc000, why: 'starts one byte into an element: no element boundary at byte 0' },
  'dicom/malformed/pydicom__UN_sequence.dcm': { reason: 0xa900, why: 'no SOP Class / Instance UID in the data set' },
  'dicom/malformed/pydicom__empty_charset_LEI.dcm': { reason: 0xa900, why: 'no SOP Class UID' },
  'dicom/malformed/pydicom__meta_missing_tsyntax.dcm': { reason: 0xa900, why: 'no SOP Class UID' },
  'dicom/malformed/pydicom__priv_SQ.dcm': { reason: 0xa900, why: 'no SOP Class UID' },
  'dicom/transfer-syntax/pydicom-data__HTJ2KLossless_08_RGB.dcm': { reason: 0xa900, why: 'no Study/Series Instance UID (Type 1)' },
  'dicom/charset/pydicom-charset__chrSQEncoding.dcm': { reason: 0xa900, why: 'no SOP UIDs in the data set' },
  'dicom/charset/pydicom-charset__chrSQEncoding1.dcm': { reason: 0xa900, why: 'no SOP UIDs in the data set' },
  'dicom/series/pydicom-dicomdirtests/DICOMDIR-nooffset': { reason: 0xc000, why: 'items overrun their sequence length' },
  'dicom/modalities/nibabel-nicom__siemens_dwi_0.dcm.gz': { reason: 0xc000, why: 'a gzip file, not DICOM (its gunzipped bytes are stored below)' },
};

function expectedFor(file: ManifestDicomFile): { stored: true } | { stored: false; reason: number } {
  const listed = EXPECTED_FAILURES[file.relPath];
  if (listed) return { stored: false, reason: listed.reason };
  // A DICOMDIR is a media directory, not a storage SOP instance (PS3.10 7.3): 0x0122.
  if (file.sopClass === 'Media Storage Directory Storage') return { stored: false, reason: 0x0122 };
  return { stored: true };
}

const files = readManifestDicomFiles(sharedData());

describe('STOW-RS of every DICOM file in shared/data/MANIFEST.md', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  test('the manifest lists the DICOM files (all 5 series folders and 6 single-file sections)', () => {
    expect(files.length).toBeGreaterThanOrEqual(240);
    expect(new Set(files.map((f) => f.relPath.split('/').slice(0, 2).join('/'))).size).toBe(7);
    for (const f of files) expect(fs.existsSync(sharedData(f.relPath))).toBe(true);
  });

  test.each(files.map((f) => [f.relPath, f] as const))('%s', async (_name, file) => {
    const bytes = fs.readFileSync(sharedData(file.relPath));
    const { body, contentType } = buildMultipart([bytes]);
    const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).send(body);
    expect(res.status).toBeLessThan(500);
    const expected = expectedFor(file);
    if (expected.stored) {
      expect([200, 202]).toContain(res.status);
      expect(res.body['00081199']?.Value).toHaveLength(1);
      expect(res.body['00081198']).toBeUndefined();
    } else {
      expect(res.status).toBe(409);
      expect(res.body['00081198'].Value[0]['00081197'].Value[0]).toBe(expected.reason);
    }
  });

  test('the gzip-wrapped Siemens DWI mosaic is stored once unwrapped', async () => {
    const bytes = zlib.gunzipSync(fs.readFileSync(sharedData('dicom/modalities/nibabel-nicom__siemens_dwi_0.dcm.gz')));
    const { body, contentType } = buildMultipart([bytes]);
    const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).send(body);
    expect(res.status).toBe(200);
  });

  test('the server still answers correctly after all of them', async () => {
    expect((await request(t.http).get('/readyz')).status).toBe(200);
  });
});
