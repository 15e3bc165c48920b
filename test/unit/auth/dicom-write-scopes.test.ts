import { dicomWriteScopesFor, instanceAdmissionFor, STORE_REFUSAL } from '../../../src/auth/dicom-write-scopes';
import { decide } from '../../../src/auth/policy';
import type { Principal } from '../../../src/auth/principal';
import { parseScopes } from '../../../src/auth/scopes';
import { createInstanceScanner } from '../../../src/dicom/instance-scanner';
import type { ScannedInstance } from '../../../src/dicom/types';
import { createSyntheticInstance, newUid, type SyntheticInstanceOptions } from '../../../src/generate/synthetic-dicom';

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';

async function scanned(options: SyntheticInstanceOptions): Promise<ScannedInstance> {
  const scanner = createInstanceScanner({ maxHeaderBytes: 1 << 20 });
  scanner.writable.end(createSyntheticInstance({ rows: 8, columns: 8, bitsAllocated: 8, ...options }).bytes);
  return scanner.result;
}

/** Whether an instance passes the sets of `query` strings (one set each, SMART scope syntax after the `?`). */
function admits(instance: ScannedInstance, ...queries: string[]): boolean {
  const sets = queries.map((q) => Object.fromEntries(q.split('&').map((p) => [p.slice(0, p.indexOf('=')), decodeURIComponent(p.slice(p.indexOf('=') + 1))])));
  return instanceAdmissionFor(sets)(instance) === undefined;
}

function admin(scope: string): Principal {
  return { subject: 'u-admin', role: 'admin', scopes: parseScopes(scope), scopeText: scope, projects: [], issuer: 'http://il.test', source: 'local', expiresAt: 0 };
}

describe('granular ImagingStudy scopes evaluated on a DICOM instance before it is stored', () => {
  let opt: ScannedInstance;
  let ct: ScannedInstance;
  const studyUID = newUid();
  beforeAll(async () => {
    opt = await scanned({
      studyInstanceUID: studyUID,
      modality: 'OPT',
      accessionNumber: 'ACC-77',
      studyDate: '20210315',
      studyTime: '101500',
      laterality: 'R',
      extra: { BodyPartExamined: 'EYE' },
    });
    ct = await scanned({ studyInstanceUID: newUid(), modality: 'CT', studyDate: '20190102' });
  });

  test('modality is a token on the instance Modality, with or without the DCM system', () => {
    expect(admits(opt, 'modality=OPT')).toBe(true);
    expect(admits(opt, `modality=${DCM}|OPT`)).toBe(true);
    expect(admits(opt, 'modality=OPT,OP')).toBe(true);
    expect(admits(ct, 'modality=OPT')).toBe(false);
    expect(admits(opt, 'modality=http://example.org/other|OPT')).toBe(false);
    // Token codes match exactly, as a FHIR search does.
    expect(admits(opt, 'modality=opt')).toBe(false);
    expect(admits(opt, 'modality:not=CT')).toBe(true);
    expect(admits(ct, 'modality:not=CT')).toBe(false);
  });

  test('identifier is the Study Instance UID as urn:oid: (system urn:dicom:uid) or the AccessionNumber', () => {
    expect(admits(opt, `identifier=urn:oid:${studyUID}`)).toBe(true);
    expect(admits(opt, `identifier=urn:dicom:uid|urn:oid:${studyUID}`)).toBe(true);
    expect(admits(opt, `identifier=${studyUID}`)).toBe(false);
    expect(admits(opt, 'identifier=ACC-77')).toBe(true);
    expect(admits(opt, 'identifier=|ACC-77')).toBe(true);
    expect(admits(opt, 'identifier=urn:example|ACC-77')).toBe(false);
    expect(admits(ct, `identifier=urn:oid:${studyUID}`)).toBe(false);
  });

  test('started is StudyDate (and StudyTime) with the FHIR date prefixes', () => {
    expect(admits(opt, 'started=2021-03-15')).toBe(true);
    expect(admits(opt, 'started=2021')).toBe(true);
    expect(admits(opt, 'started=ge2021-01-01')).toBe(true);
    expect(admits(opt, 'started=gt2021-03-15')).toBe(false);
    expect(admits(opt, 'started=lt2021-03-16')).toBe(true);
    expect(admits(opt, 'started=le2021-03-14')).toBe(false);
    expect(admits(opt, 'started=eq2021-03')).toBe(true);
    expect(admits(ct, 'started=ge2020-01-01')).toBe(false);
    expect(admits(ct, 'started=lt2020-01-01')).toBe(true);
  });

  test('laterality and the other parameters an instance determines', () => {
    expect(admits(opt, 'laterality=http://snomed.info/sct|24028007')).toBe(true);
    expect(admits(opt, 'laterality=right')).toBe(true);
    expect(admits(opt, 'laterality=left')).toBe(false);
    expect(admits(opt, `series=${opt.attributes.seriesInstanceUID}`)).toBe(true);
    expect(admits(opt, `instance=${opt.attributes.sopInstanceUID}`)).toBe(true);
    expect(admits(opt, `dicom-class=urn:oid:${opt.attributes.sopClassUID}`)).toBe(true);
    expect(admits(opt, 'status=available')).toBe(true);
  });

  test('bodysite matches as a search on the stored ImagingStudy would: BodyPartExamined is a display, no code', () => {
    expect(admits(opt, 'bodysite:text=eye')).toBe(true);
    expect(admits(opt, 'bodysite=EYE')).toBe(false);
    expect(admits(ct, 'bodysite:missing=true')).toBe(true);
  });

  test('every parameter of a set must match; several sets are a union', () => {
    expect(admits(opt, 'modality=OPT&started=ge2021-01-01')).toBe(true);
    expect(admits(opt, 'modality=OPT&started=lt2021-01-01')).toBe(false);
    expect(admits(ct, 'modality=OPT', 'modality=CT')).toBe(true);
  });

  test('a set naming a parameter that cannot be evaluated grants nothing, without spoiling the others', () => {
    expect(admits(opt, 'modality=OPT&patient=Patient/123')).toBe(false);
    expect(admits(opt, 'no-such-parameter=1')).toBe(false);
    expect(admits(opt, '_id=abc')).toBe(false);
    expect(admits(opt, 'started=not-a-date')).toBe(false);
    expect(admits(opt, 'modality:above=OPT')).toBe(false);
    expect(admits(opt, 'patient.identifier=x', 'modality=OPT')).toBe(true);
    expect(instanceAdmissionFor([{ subject: 'Patient/1' }])(opt)).toBe(STORE_REFUSAL);
  });

  test('a token without granular sets gets no check at all (the fast path)', () => {
    for (const scope of ['user/*.cruds', 'user/ImagingStudy.cruds', 'user/ImagingStudy.c?modality=OPT user/ImagingStudy.c']) {
      const p = admin(scope);
      expect(dicomWriteScopesFor(p, 'create', decide(p, { resourceType: 'ImagingStudy', interaction: 'create' }), [])).toBeUndefined();
      expect(dicomWriteScopesFor(p, 'delete', decide(p, { resourceType: 'ImagingStudy', interaction: 'delete' }), [])).toBeUndefined();
    }
    const narrow = admin('user/ImagingStudy.cd?modality=OPT');
    expect(dicomWriteScopesFor(narrow, 'create', decide(narrow, { resourceType: 'ImagingStudy', interaction: 'create' }), [])?.admitInstance).toBeDefined();
    expect(dicomWriteScopesFor(narrow, 'delete', decide(narrow, { resourceType: 'ImagingStudy', interaction: 'delete' }), [])?.deleteScope).toBeDefined();
  });
});
