/**
 * The column-level policy on DICOMweb and in bulk exports (issue 5: "patient identifiers visible
 * to Admin only"). A data manager's QIDO-RS results, WADO-RS metadata and retrieved instances
 * carry PatientID, AccessionNumber, address and telephone masked (`***`), at every depth, as its
 * FHIR answers do; the pixels and UIDs are as stored; it still finds the study by PatientID. The
 * admin gets the stored bytes.
 */
import request from 'supertest';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { binaryBody } from '../../helpers/binary-body';
import { buildMultipart } from '../../helpers/multipart-body';
import { startTestApp, type TestApp } from '../../helpers/test-app';

// dcmjs ships no type declarations.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const dcmjs = require('dcmjs');

const MRN = 'MRN-MASK-90210';
const OTHER_MRN = 'OTHER-MRN-31337';
const ACCESSION = 'ACC-MASK-5150';
const ADDRESS = '7 Hidden Row';
const PHONE = '+44 113 496 0000';
const PROJECT = 'p-mask';

type Json = Record<string, { vr: string; Value?: unknown[] }>;

/** The body of a supertest answer as bytes (DICOM and multipart answers). */
function binary(res: request.Response): Buffer {
  return res.body as Buffer;
}

const asBytes = (req: request.Test) => req.buffer(true).parse(binaryBody);

describe('a data manager reads DICOM with patient identifiers masked', () => {
  let t: TestApp;
  let dm: string;
  let stored: Buffer;
  let pixels: Buffer;
  const study = newUid();
  const series = newUid();
  let sop = '';

  beforeAll(async () => {
    t = await startTestApp();
    dm = await t.token('data-manager', [PROJECT]);
    const instance = createSyntheticInstance({
      studyInstanceUID: study,
      seriesInstanceUID: series,
      modality: 'OPT',
      patientID: MRN,
      patientName: 'Maskley^Ada',
      rows: 8,
      columns: 8,
      extra: {
        AccessionNumber: ACCESSION,
        PatientAddress: ADDRESS,
        PatientTelephoneNumbers: PHONE,
        IssuerOfPatientID: 'HOSPITAL-A',
        OtherPatientIDsSequence: [{ PatientID: OTHER_MRN, IssuerOfPatientID: 'HOSPITAL-B', TypeOfPatientID: 'TEXT' }],
        RequestAttributesSequence: [{ AccessionNumber: ACCESSION, RequestedProcedureID: 'RP-1', ScheduledProcedureStepID: 'SPS-1' }],
      },
    });
    stored = instance.bytes;
    sop = instance.sopInstanceUID;
    pixels = Buffer.from(dcmjs.data.DicomMessage.readFile(new Uint8Array(stored).buffer).dict['7FE00010'].Value[0]);
    const body = buildMultipart([stored]);
    const res = await request(t.http).post('/dicomweb/studies').set({ Authorization: `Bearer ${dm}`, 'Content-Type': body.contentType }).send(body.body);
    expect(res.status).toBe(200);
  });
  afterAll(async () => {
    await t?.close();
  });

  const asDm = () => ({ Authorization: `Bearer ${dm}` });
  const secrets = [MRN, OTHER_MRN, ACCESSION, ADDRESS, PHONE];
  const expectNoSecret = (text: string) => {
    for (const s of secrets) expect(text).not.toContain(s);
  };

  test('QIDO-RS finds the study by PatientID and answers it masked', async () => {
    const res = await request(t.http).get(`/dicomweb/studies?PatientID=${MRN}&includefield=all`).set(asDm());
    expect(res.status).toBe(200);
    expect(res.body).toHaveLength(1);
    const [found] = res.body as Json[];
    expect(found['00100020']).toEqual({ vr: 'LO', Value: ['***'] });
    expect(found['00080050']).toEqual({ vr: 'SH', Value: ['***'] });
    expect(found['00100010'].Value).toEqual([{ Alphabetic: 'Maskley^Ada' }]);
    expect(found['0020000D'].Value).toEqual([study]);
    expectNoSecret(res.text);
    for (const path of [`/dicomweb/studies/${study}/series?includefield=all`, `/dicomweb/studies/${study}/instances?includefield=all`, `/dicomweb/instances?PatientID=${MRN}&includefield=all`]) {
      const level = await request(t.http).get(path).set(asDm());
      expect(level.status).toBe(200);
      expect(level.body.length).toBeGreaterThan(0);
      expectNoSecret(level.text);
    }
  });

  test('WADO-RS metadata is masked at every depth; issuers and other values stay', async () => {
    const res = await request(t.http).get(`/dicomweb/studies/${study}/metadata`).set(asDm());
    expect(res.status).toBe(200);
    expectNoSecret(res.text);
    const [md] = JSON.parse(res.text) as Json[];
    expect(md['00100020'].Value).toEqual(['***']);
    expect(md['00101040'].Value).toEqual(['***']);
    expect(md['00102154'].Value).toEqual(['***']);
    expect(md['00100021'].Value).toEqual(['HOSPITAL-A']);
    const other = (md['00101002'].Value as Json[])[0];
    expect(other['00100020'].Value).toEqual(['***']);
    expect(other['00100021'].Value).toEqual(['HOSPITAL-B']);
    const requested = (md['00400275'].Value as Json[])[0];
    expect(requested['00080050'].Value).toEqual(['***']);
    expect(requested['00401001'].Value).toEqual(['RP-1']);
    expect(md['00080018'].Value).toEqual([sop]);
  });

  test('a retrieved instance has a masked header and the stored pixels', async () => {
    const res = await asBytes(request(t.http).get(`/dicomweb/studies/${study}/series/${series}/instances/${sop}`).set(asDm()).set('Accept', 'application/dicom'));
    expect(res.status).toBe(200);
    const bytes = binary(res);
    expectNoSecret(bytes.toString('latin1'));
    const parsed = dcmjs.data.DicomMessage.readFile(new Uint8Array(bytes).buffer);
    const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(parsed.dict) as Record<string, unknown>;
    expect(ds.PatientID).toBe('***');
    expect(ds.AccessionNumber).toBe('***');
    expect(ds.PatientName).toEqual([{ Alphabetic: 'Maskley^Ada' }]);
    expect(ds.SOPInstanceUID).toBe(sop);
    expect((ds.OtherPatientIDsSequence as Array<Record<string, unknown>>)[0].PatientID).toBe('***');
    expect(Buffer.from(parsed.dict['7FE00010'].Value[0]).equals(pixels)).toBe(true);
    expect(parsed.meta['00020010'].Value).toEqual(['1.2.840.10008.1.2.1']);

    const whole = await asBytes(request(t.http).get(`/dicomweb/studies/${study}`).set(asDm()));
    expect(whole.status).toBe(200);
    expect(whole.headers['content-type']).toContain('multipart/related');
    expect(binary(whole).length).toBeGreaterThan(pixels.length);
    expectNoSecret(binary(whole).toString('latin1'));
  });

  test('the admin reads the identifiers and retrieves the stored bytes', async () => {
    const qido = await request(t.http).get(`/dicomweb/studies?PatientID=${MRN}`);
    expect(qido.body[0]['00100020'].Value).toEqual([MRN]);
    const md = await request(t.http).get(`/dicomweb/studies/${study}/metadata`);
    expect(md.text).toContain(OTHER_MRN);
    const res = await asBytes(request(t.http).get(`/dicomweb/studies/${study}/series/${series}/instances/${sop}`).set('Accept', 'application/dicom'));
    expect(res.status).toBe(200);
    expect(binary(res).equals(stored)).toBe(true);
  });
});
