import { randomBytes } from 'node:crypto';
import { createSyntheticInstance, newUid, pixelDataLength, type SyntheticInstanceOptions } from '../../src/generate/synthetic-dicom';
import { buildMultipartRelated, firstValue, KitHttp, mediaType, parseJson, parseMultipart, type DicomJson, type KitResponse } from './http';
import { CheckFailure, expect, Report, SkipCheck } from './report';

const DICOM_JSON = 'application/dicom+json';
const EXPLICIT_VR_LE = '1.2.840.10008.1.2.1';
const ROWS = 16;
const COLUMNS = 16;

/** One generated instance and what the kit expects the server to give back. */
interface KitInstance {
  options: SyntheticInstanceOptions;
  bytes: Buffer;
  study: string;
  series: string;
  sop: string;
  sopClass: string;
  frames: Buffer[];
}

/** The small study the kit stores: two series, three instances, one of them with two frames. */
function generateStudy(runId: string): { patientID: string; study: string; instances: KitInstance[] } {
  const study = newUid();
  const seriesCT = newUid();
  const seriesMR = newUid();
  const patientID = `KIT-${runId}`;
  const common: SyntheticInstanceOptions = {
    studyInstanceUID: study,
    patientID,
    patientName: `Kit^${runId}`,
    studyDate: '20240115',
    accessionNumber: `A${runId.slice(0, 8)}`,
    studyDescription: 'Conformance kit study',
    rows: ROWS,
    columns: COLUMNS,
    bitsAllocated: 16,
  };
  const specs: SyntheticInstanceOptions[] = [
    { ...common, seriesInstanceUID: seriesCT, modality: 'CT', seriesNumber: 1, instanceNumber: 1, seed: 1 },
    { ...common, seriesInstanceUID: seriesCT, modality: 'CT', seriesNumber: 1, instanceNumber: 2, seed: 2 },
    { ...common, seriesInstanceUID: seriesMR, modality: 'MR', seriesNumber: 2, instanceNumber: 1, numberOfFrames: 2, sopClassUID: '1.2.840.10008.5.1.4.1.1.4', seed: 3 },
  ];
  const instances = specs.map((options) => {
    const made = createSyntheticInstance(options);
    // Pixel Data is the last element the generator writes: its value is the file's tail.
    const pixels = made.bytes.subarray(made.bytes.length - pixelDataLength(options));
    const frameLength = ROWS * COLUMNS * 2;
    const frames = Array.from({ length: options.numberOfFrames ?? 1 }, (_, i) => pixels.subarray(i * frameLength, (i + 1) * frameLength));
    return { options, bytes: made.bytes, study, series: made.seriesInstanceUID, sop: made.sopInstanceUID, sopClass: made.sopClassUID, frames };
  });
  return { patientID, study, instances };
}

/** Reads a QIDO-RS answer: 200 with a JSON array, or 204 for no matches (PS3.18 10.6.3.2). */
function qidoResults(res: KitResponse, what: string): DicomJson[] {
  if (res.status === 204) return [];
  expect(res.status === 200, `${what}: status ${res.status}, expected 200`);
  expect(mediaType(res) === DICOM_JSON || mediaType(res) === 'application/json', `${what}: Content-Type ${res.headers.get('content-type')}`);
  const body = parseJson(res, what);
  expect(Array.isArray(body), `${what}: body is not a JSON array`);
  return body as DicomJson[];
}

function expectTags(ds: DicomJson, tags: string[], what: string): void {
  const missing = tags.filter((t) => ds[t] === undefined);
  expect(missing.length === 0, `${what}: missing attribute(s) ${missing.join(', ')}`);
}

/**
 * The DICOMweb checks (PS3.18): Store (10.5), Search (10.6) at the three levels, Retrieve
 * (10.4) of metadata, instances, frames and a rendered image, and, for imaging-lake, the
 * capabilities resource, the authorization denial and deletion.
 */
export async function runDicomwebChecks(report: Report, http: KitHttp, prefix: string, opts: { hasToken: boolean }): Promise<void> {
  const runId = randomBytes(6).toString('hex').toUpperCase();
  const { patientID, study, instances } = generateStudy(runId);
  const [ct1, ct2, mr] = instances as [KitInstance, KitInstance, KitInstance];
  const check = (name: string, fn: () => Promise<void>, o?: { oursOnly?: boolean }) => report.check('dicomweb', name, fn, o);
  let stored = false;
  const needStored = () => {
    if (!stored) throw new SkipCheck('the STOW-RS check did not pass');
  };

  await check('Retrieve Capabilities (PS3.18 8.9): GET / answers JSON', async () => {
    const res = await http.request('GET', `${prefix}/`, { headers: { accept: 'application/json' } });
    expect(res.status === 200, `status ${res.status}`);
    parseJson(res, 'capabilities');
  }, { oursOnly: true });

  await check('Store Instances (PS3.18 10.5): 3 instances in one multipart/related request', async () => {
    const { body, contentType } = buildMultipartRelated(instances.map((i) => i.bytes));
    const res = await http.request('POST', `${prefix}/studies`, { headers: { 'content-type': contentType, accept: DICOM_JSON }, body });
    expect(res.status === 200, `status ${res.status}, expected 200 (all stored): ${res.body.subarray(0, 200).toString()}`);
    expect(mediaType(res) === DICOM_JSON, `Content-Type ${res.headers.get('content-type')}, expected ${DICOM_JSON}`);
    const ds = parseJson(res, 'store response') as DicomJson;
    expect(ds && typeof ds === 'object' && !Array.isArray(ds), 'store response is not a DICOM JSON data set');
    expect(ds['00081198'] === undefined || (ds['00081198'].Value ?? []).length === 0, 'FailedSOPSequence (0008,1198) is not empty');
    const referenced = (ds['00081199']?.Value ?? []) as DicomJson[];
    expect(referenced.length === 3, `ReferencedSOPSequence (0008,1199) has ${referenced.length} items, expected 3`);
    for (const inst of instances) {
      const item = referenced.find((r) => firstValue(r, '00081155') === inst.sop);
      expect(item, `ReferencedSOPSequence lacks SOP Instance ${inst.sop}`);
      expect(firstValue(item, '00081150') === inst.sopClass, `ReferencedSOPClassUID of ${inst.sop} is ${firstValue(item, '00081150')}`);
      expect(firstValue(item, '00081190'), `item for ${inst.sop} has no RetrieveURL (0008,1190)`);
    }
    stored = true;
  });

  await check('Store Instances: a part that is not DICOM is refused with a 4xx or listed in FailedSOPSequence', async () => {
    const { body, contentType } = buildMultipartRelated([Buffer.from('this is not a DICOM file')]);
    const res = await http.request('POST', `${prefix}/studies`, { headers: { 'content-type': contentType, accept: DICOM_JSON }, body });
    if (res.status >= 400 && res.status < 500) return;
    expect(res.status === 200 || res.status === 202, `status ${res.status}`);
    const ds = parseJson(res, 'store response') as DicomJson;
    expect((ds['00081198']?.Value ?? []).length === 1, `status ${res.status} without a FailedSOPSequence item`);
  });

  await check('Search for Studies (PS3.18 10.6): StudyInstanceUID match, default return attributes', async () => {
    needStored();
    const res = await http.request('GET', `${prefix}/studies?StudyInstanceUID=${study}`, { headers: { accept: DICOM_JSON } });
    const results = qidoResults(res, 'study search');
    expect(results.length === 1, `${results.length} results, expected 1`);
    const ds = results[0]!;
    // PS3.18 Table 10.6.3-3: study-level attributes returned by default.
    expectTags(ds, ['00080020', '00080050', '00100010', '00100020', '0020000D', '00201206', '00201208'], 'study result');
    expect(firstValue(ds, '00100020') === patientID, `PatientID ${firstValue(ds, '00100020')}`);
    expect(firstValue(ds, '00201206') === '2', `NumberOfStudyRelatedSeries ${firstValue(ds, '00201206')}, expected 2`);
    expect(firstValue(ds, '00201208') === '3', `NumberOfStudyRelatedInstances ${firstValue(ds, '00201208')}, expected 3`);
  });

  await check('Search for Studies: PatientID plus StudyDate range', async () => {
    needStored();
    const hit = qidoResults(await http.request('GET', `${prefix}/studies?PatientID=${patientID}&StudyDate=20240101-20240131`, { headers: { accept: DICOM_JSON } }), 'study search');
    expect(hit.length === 1 && firstValue(hit[0]!, '0020000D') === study, `${hit.length} results in range, expected our study`);
    const miss = qidoResults(await http.request('GET', `${prefix}/studies?PatientID=${patientID}&StudyDate=20230101-20231231`, { headers: { accept: DICOM_JSON } }), 'study search');
    expect(miss.length === 0, `${miss.length} results outside the date range, expected 0`);
  });

  await check('Search for Studies: PatientName wildcard (PS3.4 C.2.2.2.4)', async () => {
    needStored();
    const res = await http.request('GET', `${prefix}/studies?PatientName=${encodeURIComponent(`Kit^${runId.slice(0, 6)}*`)}`, { headers: { accept: DICOM_JSON } });
    const results = qidoResults(res, 'study search');
    expect(results.some((r) => firstValue(r, '0020000D') === study), `our study is not among ${results.length} results`);
  });

  await check('Search for Series (PS3.18 10.6): in a study, default return attributes and Modality match', async () => {
    needStored();
    const all = qidoResults(await http.request('GET', `${prefix}/studies/${study}/series`, { headers: { accept: DICOM_JSON } }), 'series search');
    expect(all.length === 2, `${all.length} series, expected 2`);
    // PS3.18 Table 10.6.3-4.
    for (const ds of all) expectTags(ds, ['00080060', '0020000E', '00200011', '00201209'], 'series result');
    const ctSeries = all.find((ds) => firstValue(ds, '0020000E') === ct1.series);
    expect(ctSeries && firstValue(ctSeries, '00201209') === '2', 'NumberOfSeriesRelatedInstances of the CT series is not 2');
    const mrOnly = qidoResults(await http.request('GET', `${prefix}/studies/${study}/series?Modality=MR`, { headers: { accept: DICOM_JSON } }), 'series search');
    expect(mrOnly.length === 1 && firstValue(mrOnly[0]!, '0020000E') === mr.series, `Modality=MR gave ${mrOnly.length} series`);
  });

  await check('Search for Series: limit=1 returns one result', async () => {
    needStored();
    const one = qidoResults(await http.request('GET', `${prefix}/studies/${study}/series?limit=1`, { headers: { accept: DICOM_JSON } }), 'series search');
    expect(one.length === 1, `${one.length} results with limit=1`);
  });

  await check('Search for Instances (PS3.18 10.6): in a series, default return attributes and SOPInstanceUID match', async () => {
    needStored();
    const all = qidoResults(await http.request('GET', `${prefix}/studies/${study}/series/${ct1.series}/instances`, { headers: { accept: DICOM_JSON } }), 'instance search');
    expect(all.length === 2, `${all.length} instances, expected 2`);
    // PS3.18 Table 10.6.3-5.
    for (const ds of all) expectTags(ds, ['00080016', '00080018', '00200013'], 'instance result');
    const one = qidoResults(await http.request('GET', `${prefix}/studies/${study}/series/${ct1.series}/instances?SOPInstanceUID=${ct2.sop}`, { headers: { accept: DICOM_JSON } }), 'instance search');
    expect(one.length === 1 && firstValue(one[0]!, '00080018') === ct2.sop, `SOPInstanceUID match gave ${one.length} results`);
  });

  await check('Search for Studies: an unknown StudyInstanceUID gives no results (200 [] or 204)', async () => {
    const results = qidoResults(await http.request('GET', `${prefix}/studies?StudyInstanceUID=${newUid()}`, { headers: { accept: DICOM_JSON } }), 'study search');
    expect(results.length === 0, `${results.length} results`);
  });

  await check('Retrieve Instance Metadata (PS3.18 10.4.1.1.2)', async () => {
    needStored();
    const res = await http.request('GET', `${prefix}/studies/${study}/series/${mr.series}/instances/${mr.sop}/metadata`, { headers: { accept: DICOM_JSON } });
    expect(res.status === 200, `status ${res.status}`);
    const body = parseJson(res, 'metadata') as DicomJson[];
    expect(Array.isArray(body) && body.length === 1, 'metadata is not an array of one data set');
    const ds = body[0]!;
    expect(firstValue(ds, '00080018') === mr.sop, `SOPInstanceUID ${firstValue(ds, '00080018')}`);
    expect(firstValue(ds, '00280008') === '2', `NumberOfFrames ${firstValue(ds, '00280008')}, expected 2`);
    expect(firstValue(ds, '00100020') === patientID, `PatientID ${firstValue(ds, '00100020')}`);
    const pixel = ds['7FE00010'];
    expect(!pixel || pixel.Value === undefined, 'Pixel Data is sent inline as Value');
  });

  await check('Retrieve Study Metadata: one data set per instance', async () => {
    needStored();
    const res = await http.request('GET', `${prefix}/studies/${study}/metadata`, { headers: { accept: DICOM_JSON } });
    expect(res.status === 200, `status ${res.status}`);
    const body = parseJson(res, 'metadata') as DicomJson[];
    expect(Array.isArray(body) && body.length === 3, `${Array.isArray(body) ? body.length : 'no'} data sets, expected 3`);
  });

  await check('Retrieve Instance (PS3.18 10.4.1.1.1): multipart/related application/dicom, as stored', async () => {
    needStored();
    const res = await http.request('GET', `${prefix}/studies/${study}/series/${ct1.series}/instances/${ct1.sop}`, { headers: { accept: 'multipart/related; type="application/dicom"; transfer-syntax=*' } });
    expect(res.status === 200, `status ${res.status}`);
    const parts = parseMultipart(res);
    expect(parts.length === 1, `${parts.length} parts, expected 1`);
    const part = parts[0]!.body;
    expect(part.subarray(128, 132).toString('latin1') === 'DICM', 'the part is not a DICOM Part 10 file (no DICM prefix)');
    expect(part.includes(Buffer.from(ct1.sop)), 'the part does not carry the SOP Instance UID');
    expect(part.includes(ct1.frames[0]!), 'the part does not carry the stored pixel data');
  });

  await check('Retrieve Series: one part per instance', async () => {
    needStored();
    const res = await http.request('GET', `${prefix}/studies/${study}/series/${ct1.series}`, { headers: { accept: 'multipart/related; type="application/dicom"; transfer-syntax=*' } });
    expect(res.status === 200, `status ${res.status}`);
    const parts = parseMultipart(res);
    expect(parts.length === 2, `${parts.length} parts, expected 2`);
  });

  await check('Retrieve Frames (PS3.18 10.4.1.1.4): frames 1,2 uncompressed, bytes as stored', async () => {
    needStored();
    const res = await http.request('GET', `${prefix}/studies/${study}/series/${mr.series}/instances/${mr.sop}/frames/1,2`, {
      headers: { accept: `multipart/related; type="application/octet-stream"; transfer-syntax=${EXPLICIT_VR_LE}` },
    });
    expect(res.status === 200, `status ${res.status}`);
    const parts = parseMultipart(res);
    expect(parts.length === 2, `${parts.length} parts, expected 2`);
    parts.forEach((p, i) => {
      expect(p.body.length === mr.frames[i]!.length, `frame ${i + 1} has ${p.body.length} bytes, expected ${mr.frames[i]!.length}`);
      expect(p.body.equals(mr.frames[i]!), `frame ${i + 1} bytes differ from the stored pixel data`);
    });
  });

  await check('Retrieve Frames: a frame number past the last one is refused (4xx)', async () => {
    needStored();
    const res = await http.request('GET', `${prefix}/studies/${study}/series/${mr.series}/instances/${mr.sop}/frames/3`, {
      headers: { accept: 'multipart/related; type="application/octet-stream"' },
    });
    expect(res.status >= 400 && res.status < 500, `status ${res.status}, expected 4xx`);
  });

  await check('Retrieve Rendered Instance (PS3.18 10.4.1.1.3): image/jpeg', async () => {
    needStored();
    const res = await http.request('GET', `${prefix}/studies/${study}/series/${ct1.series}/instances/${ct1.sop}/rendered`, { headers: { accept: 'image/jpeg' } });
    expect(res.status === 200, `status ${res.status}`);
    expect(mediaType(res) === 'image/jpeg', `Content-Type ${res.headers.get('content-type')}`);
    expect(res.body[0] === 0xff && res.body[1] === 0xd8, 'body does not start with a JPEG SOI marker');
  });

  await check('Retrieve Instance: an unknown instance gives 404', async () => {
    needStored();
    const res = await http.request('GET', `${prefix}/studies/${study}/series/${ct1.series}/instances/${newUid()}/metadata`, { headers: { accept: DICOM_JSON } });
    expect(res.status === 404, `status ${res.status}, expected 404`);
  });

  await check('Search without a token is refused with 401', async () => {
    if (!opts.hasToken) throw new SkipCheck('no --token given');
    const res = await http.request('GET', `${prefix}/studies?StudyInstanceUID=${study}`, { headers: { accept: DICOM_JSON }, anonymous: true });
    expect(res.status === 401, `status ${res.status}, expected 401`);
  }, { oursOnly: true });

  await check('Delete Study (non-standard): the study is gone afterwards', async () => {
    needStored();
    const res = await http.request('DELETE', `${prefix}/studies/${study}`);
    expect(res.status >= 200 && res.status < 300, `DELETE status ${res.status}`);
    const after = qidoResults(await http.request('GET', `${prefix}/studies?StudyInstanceUID=${study}`, { headers: { accept: DICOM_JSON } }), 'study search');
    if (after.length !== 0) throw new CheckFailure(`${after.length} results after the delete`);
  }, { oursOnly: true });
}
