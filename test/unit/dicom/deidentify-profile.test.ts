/**
 * PS3.15 Annex E Table E.1-1, row by row: the generated sentinel instance carries every
 * representable attribute of the 621 rows; after deidentifyDicomJson each attribute's fate
 * matches its action code under each option set (D dummy, Z empty, X removed, K kept, C cleaned,
 * U mapped; modified dates shifted), and no sentinel survives where the profile discards values.
 */
import { deidentifyDicomJson } from '../../../src/dicom/deidentify-dataset';
import { concreteTag, deidPlanFor, loadConfidentialityProfile, type ProfileRow } from '../../../src/dicom/deidentify-profile';
import type { DicomJson, DicomJsonElement } from '../../../src/dicom/types';
import { DEFAULT_DEID_OPTIONS, type DeidContext, type DeidOptions } from '../../../src/privacy/privacy-types';
import { createUidMapper } from '../../../src/privacy/uid-map';
import {
  buildPhiSentinelInstance,
  PHI_SENTINEL,
  SENTINEL_DATE,
  SENTINEL_DS,
  SENTINEL_IS,
  SENTINEL_TIME,
  SENTINEL_UID_ROOT,
  type SentinelEntry,
} from '../../helpers/phi-sentinel-dicom';

const NONE: DeidOptions = {
  retainLongitudinalModifiedDates: false,
  retainPatientCharacteristics: false,
  retainDeviceIdentity: false,
  retainSafePrivate: false,
  cleanDescriptors: false,
};
const OPTION_SETS: Array<[string, DeidOptions]> = [
  ['no options', NONE],
  ['default (modified dates)', { ...DEFAULT_DEID_OPTIONS }],
  ['retain patient characteristics', { ...NONE, retainPatientCharacteristics: true }],
  ['retain device identity', { ...NONE, retainDeviceIdentity: true }],
  ['retain safe private', { ...NONE, retainSafePrivate: true }],
  ['clean descriptors', { ...NONE, cleanDescriptors: true }],
  ['all options', { retainLongitudinalModifiedDates: true, retainPatientCharacteristics: true, retainDeviceIdentity: true, retainSafePrivate: true, cleanDescriptors: true }],
];
const OFFSET = -400;
const PATIENT_KEY = 'PK0001';

function contextFor(options: DeidOptions): DeidContext {
  return { projectId: 'project-a', options, patient: { patientKey: PATIENT_KEY, dateOffsetDays: OFFSET }, mapUid: createUidMapper(Buffer.from('test-key'), 'project-a') };
}

/** The expected date, computed independently of the implementation: 1923-04-17 plus OFFSET days. */
function expectedShiftedDate(): string {
  const d = new Date(Date.UTC(1923, 3, 17) + OFFSET * 86_400_000);
  return `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, '0')}${String(d.getUTCDate()).padStart(2, '0')}`;
}

type Fate = 'remove' | 'empty' | 'dummy' | 'keep' | 'clean' | 'uid' | 'shift' | 'patient-key' | 'items';

/** The fate PS3.15 E.1.1 / E.3 give a row under `o`, with the combined codes read as documented in deidentify-profile.ts. */
function expectedFate(row: ProfileRow | undefined, o: DeidOptions, vr: string, tag: number): Fate {
  if (!row && tag === 0x00081150) return 'keep'; // Referenced SOP Class UID: a class, never mapped
  if (!row) return 'dummy'; // TextValue in a Content Sequence item (D): unlisted free text becomes a dummy
  if (tag === 0x00100010 || tag === 0x00100020) return 'patient-key';
  if (row.tag.startsWith('(GGGG')) return 'remove'; // the safe private list is empty
  if (o.retainLongitudinalModifiedDates && row.rtnLongModifDatesOpt && ['DA', 'DT', 'TM'].includes(vr)) return 'shift';
  const chosen = [
    o.retainPatientCharacteristics ? row.rtnPatCharsOpt : undefined,
    o.retainDeviceIdentity ? row.rtnDevIdOpt : undefined,
    o.cleanDescriptors ? row.cleanDescOpt : undefined,
  ];
  let fate: Fate;
  if (o.retainLongitudinalModifiedDates && row.rtnLongModifDatesOpt) fate = basic(row.basicProfile);
  else if (chosen.includes('K')) fate = 'keep';
  else if (chosen.includes('C')) fate = 'clean';
  else fate = basic(row.basicProfile);
  if (vr === 'SQ' && fate !== 'remove' && !(fate === 'empty' && row.basicProfile === 'Z')) return 'items';
  if (vr === 'UI' && fate !== 'remove' && fate !== 'empty') return 'uid'; // UIDs are always mapped, even where an option says K
  return fate;
}

function basic(code: string): Fate {
  return ({ X: 'remove', Z: 'empty', 'X/Z': 'empty', D: 'dummy', 'X/D': 'dummy', 'X/Z/D': 'dummy', 'Z/D': 'dummy', K: 'keep', C: 'clean', U: 'uid', 'X/Z/U*': 'uid' } as Record<string, Fate>)[code];
}

function at(ds: DicomJson, path: string[]): DicomJsonElement | undefined {
  let node: unknown = ds;
  // Paths alternate tag keys and item indexes: key, index, key ...
  for (const [i, step] of path.entries()) {
    if (node === undefined || node === null) return undefined;
    if (i % 2 === 1) node = ((node as DicomJsonElement).Value ?? [])[Number(step)];
    else node = (node as DicomJson)[step];
  }
  return node as DicomJsonElement | undefined;
}

function hasValue(el: DicomJsonElement): boolean {
  return (el.Value?.length ?? 0) > 0 || el.InlineBinary !== undefined || el.BulkDataURI !== undefined;
}

/** Sentinel needles that must not survive a discarded value. */
function leaks(el: DicomJsonElement | undefined): boolean {
  const text = JSON.stringify(el ?? null);
  const binary = el?.InlineBinary ? Buffer.from(el.InlineBinary, 'base64').toString('latin1') : '';
  return [PHI_SENTINEL, SENTINEL_DATE, SENTINEL_DS, SENTINEL_IS, SENTINEL_UID_ROOT].some((n) => text.includes(n) || binary.includes(n));
}

function checkEntry(entry: SentinelEntry, out: DicomJson, o: DeidOptions, ctx: DeidContext): string | null {
  const parentPath = entry.path.slice(0, -1);
  if (parentPath.length && at(out, parentPath) === undefined) return null; // its sequence item is gone: nothing left to check
  const fate = expectedFate(entry.row, o, entry.vr, entry.tag);
  const got = at(out, entry.path);
  const original = entry.element;
  const label = `${entry.path.join('/')} ${entry.row?.name ?? 'TextValue'} [${entry.row?.basicProfile ?? '-'}] ${entry.vr} expected ${fate}`;
  const fail = (why: string) => `${label}: ${why} (got ${JSON.stringify(got)})`;
  switch (fate) {
    case 'remove':
      return got === undefined ? null : fail('present');
    case 'empty':
      return got && !hasValue(got) ? null : fail('not empty');
    case 'dummy':
      if (!got || !hasValue(got)) return fail('no dummy value');
      return leaks(got) ? fail('dummy leaks the original') : null;
    case 'patient-key': {
      const v = got?.Value?.[0];
      const text = typeof v === 'object' && v !== null ? (v as { Alphabetic?: string }).Alphabetic : v;
      return text === PATIENT_KEY ? null : fail('not the PatientKey');
    }
    case 'uid':
      return got?.Value?.[0] === ctx.mapUid(String(original.Value![0])) && String(got.Value[0]).startsWith('2.25.') ? null : fail('UID not mapped');
    case 'items':
      return got && (got.Value?.length ?? 0) === (original.Value?.length ?? 0) ? null : fail('items not kept');
    case 'shift':
      if (entry.vr === 'TM') return got?.Value?.[0] === SENTINEL_TIME ? null : fail('time not kept');
      if (entry.vr === 'DA') return got?.Value?.[0] === expectedShiftedDate() ? null : fail('date not shifted');
      return got?.Value?.[0] === `${expectedShiftedDate()}071513.250` ? null : fail('datetime not shifted');
    case 'clean':
      if (leaks(got)) return fail('cleaned value leaks');
      // Every generated value shares its harmless words with removed ones, so cleaning may drop them
      // all; what survives must not identify (the words kept are tested on realistic data below).
      return null;
    case 'keep': {
      if (entry.tag === 0x00101010) return got?.Value?.[0] === '090Y' ? null : fail("Patient's Age over 89 not capped to 090Y");
      return JSON.stringify(got) === JSON.stringify(original) ? null : fail('not kept as is');
    }
  }
}

describe('PS3.15 Table E.1-1 profile data', () => {
  test('has all 621 rows, each with a known action code, and a plan resolves every concrete tag', () => {
    const rows = loadConfidentialityProfile();
    expect(rows).toHaveLength(621);
    const codes = new Set(rows.map((r) => r.basicProfile));
    expect([...codes].sort()).toEqual(['D', 'U', 'X', 'X/D', 'X/Z', 'X/Z/D', 'X/Z/U*', 'Z', 'Z/D']);
    const plan = deidPlanFor(NONE);
    const concrete = rows.map(concreteTag).filter((t): t is number => t !== null);
    expect(concrete).toHaveLength(617); // 621 minus curve, overlay data, overlay comments, private
    expect(concrete.filter((t) => plan.actionOf(t) === undefined)).toEqual([]);
  });

  test('pattern rows cover curve, overlay and private groups', () => {
    const plan = deidPlanFor(NONE);
    expect(plan.actionOf(0x501e3000)).toBe('remove'); // (50xx,xxxx) Curve Data
    expect(plan.actionOf(0x50020005)).toBe('remove');
    expect(plan.actionOf(0x60023000)).toBe('remove'); // (60xx,3000) Overlay Data
    expect(plan.actionOf(0x601e4000)).toBe('remove'); // (60xx,4000) Overlay Comments
    expect(plan.actionOf(0x00291010)).toBe('remove'); // (gggg,eeee) odd group
    expect(plan.actionOf(0x00280010)).toBeUndefined(); // Rows: not in the table
  });
});

describe.each(OPTION_SETS)('deidentifyDicomJson with %s', (_name, options) => {
  const generated = buildPhiSentinelInstance();
  const ctx = contextFor(options);
  const out = deidentifyDicomJson(generated.json, ctx);

  test('every represented row of the table meets the fate of its action code', () => {
    const rowsSeen = new Set(generated.entries.filter((e) => e.row).map((e) => e.row!.tag));
    // 621 rows minus 3 Command (0000) / Directory (0004) rows that cannot be in an instance.
    expect(rowsSeen.size).toBe(618);
    const failures = generated.entries.filter((e) => e.place !== 'meta').map((e) => checkEntry(e, out, options, ctx)).filter((f) => f !== null);
    expect(failures).toEqual([]);
  });

  test('declares what was done: PatientIdentityRemoved, method, CID 7050 codes, temporal modification', () => {
    expect(out['00120062']).toEqual({ vr: 'CS', Value: ['YES'] });
    const codes = (out['00120064'].Value as DicomJson[]).map((item) => item['00080100'].Value![0]);
    const expected = ['113100'];
    if (options.retainLongitudinalModifiedDates) expected.push('113107');
    if (options.retainPatientCharacteristics) expected.push('113108');
    if (options.retainDeviceIdentity) expected.push('113109');
    if (options.retainSafePrivate) expected.push('113111');
    if (options.cleanDescriptors) expected.push('113105');
    expect(codes).toEqual(expected);
    for (const item of out['00120064'].Value as DicomJson[]) expect(item['00080102'].Value).toEqual(['DCM']);
    expect(out['00120063'].Value).toHaveLength(expected.length);
    expect(out['00280303'].Value).toEqual([options.retainLongitudinalModifiedDates ? 'MODIFIED' : 'REMOVED']);
  });

  test('drops every private element of the unknown creator, nested sequences included', () => {
    expect(Object.keys(out).filter((k) => parseInt(k.slice(0, 4), 16) % 2 === 1)).toEqual([]);
  });
});

describe('no sentinel survives where nothing is retained by option', () => {
  test.each([
    ['no options', NONE],
    ['default (modified dates)', { ...DEFAULT_DEID_OPTIONS }],
    ['clean descriptors', { ...DEFAULT_DEID_OPTIONS, cleanDescriptors: true }],
  ])('%s: the JSON output has no PHI_SENTINEL, sentinel date, number or original UID', (_name, options) => {
    const generated = buildPhiSentinelInstance();
    const text = JSON.stringify(deidentifyDicomJson(generated.json, contextFor(options)));
    for (const needle of [PHI_SENTINEL, SENTINEL_DATE, SENTINEL_DS, SENTINEL_IS, SENTINEL_UID_ROOT]) expect(text).not.toContain(needle);
    expect(text).toContain(PATIENT_KEY);
  });
});

describe('rows that cannot live in an instance, and UIDs outside the table', () => {
  const ctx = contextFor(DEFAULT_DEID_OPTIONS);

  test('Command elements (group 0000) are dropped and (0004,1511) is mapped', () => {
    const out = deidentifyDicomJson({
      '00001001': { vr: 'UI', Value: [`${SENTINEL_UID_ROOT}.7`] },
      '00041511': { vr: 'UI', Value: [`${SENTINEL_UID_ROOT}.8`] },
    }, ctx);
    expect(out['00001001']).toBeUndefined();
    expect(out['00041511'].Value).toEqual([ctx.mapUid(`${SENTINEL_UID_ROOT}.8`)]);
  });

  test('UIDs not in the table are mapped, well-known and class UIDs are kept', () => {
    const out = deidentifyDicomJson({
      '00081115': { vr: 'SQ', Value: [{ '0020000E': { vr: 'UI', Value: ['1.2.3.4'] }, '00081199': { vr: 'SQ', Value: [{ '00081150': { vr: 'UI', Value: ['1.2.840.10008.5.1.4.1.1.2'] }, '00081155': { vr: 'UI', Value: ['1.2.3.5'] } }] } }] },
      '00080016': { vr: 'UI', Value: ['1.3.6.1.4.1.9590.100.1.2.999'] },
      '0008010C': { vr: 'UI', Value: ['2.16.840.1.113883.6.96'] },
      '00209161': { vr: 'UI', Value: ['1.2.3.6'] }, // Concatenation UID (listed, U)
      '00200242': { vr: 'UI', Value: ['1.2.3.7'] }, // SOP Instance UID of Concatenation Source (not listed)
      '00089124': { vr: 'SQ', Value: [{ '00081167': { vr: 'UI', Value: ['1.2.3.8'] } }] }, // Multi-frame Source SOP Instance UID (not listed)
      '00189999': { vr: 'UI', Value: ['1.2.840.10008.1.2.4.50'] },
    }, ctx);
    const series = (out['00081115'].Value![0] as DicomJson);
    expect(series['0020000E'].Value).toEqual([ctx.mapUid('1.2.3.4')]);
    const instance = (series['00081199'].Value![0] as DicomJson);
    expect(instance['00081150'].Value).toEqual(['1.2.840.10008.5.1.4.1.1.2']);
    expect(instance['00081155'].Value).toEqual([ctx.mapUid('1.2.3.5')]);
    expect(out['00080016'].Value).toEqual(['1.3.6.1.4.1.9590.100.1.2.999']);
    expect(out['0008010C'].Value).toEqual(['2.16.840.1.113883.6.96']);
    expect(out['00209161'].Value).toEqual([ctx.mapUid('1.2.3.6')]);
    expect(out['00189999'].Value).toEqual(['1.2.840.10008.1.2.4.50']);
    expect(out['00200242'].Value).toEqual([ctx.mapUid('1.2.3.7')]);
    expect((out['00089124'].Value![0] as DicomJson)['00081167'].Value).toEqual([ctx.mapUid('1.2.3.8')]);
  });

  test('BulkDataURIs: rewritten by the caller, removed when it says so, absolute ones removed by default', () => {
    const input: DicomJson = {
      '00283006': { vr: 'OW', BulkDataURI: 'bulkdata/00283006' },
      '00282000': { vr: 'OB', BulkDataURI: 'https://host/dicomweb/studies/1.2.3/bulkdata/00282000' },
    };
    const plain = deidentifyDicomJson(input, ctx);
    expect(plain['00283006']).toEqual({ vr: 'OW', BulkDataURI: 'bulkdata/00283006' });
    expect(plain['00282000']).toBeUndefined();
    const rewritten = deidentifyDicomJson(input, ctx, { rewriteBulkDataUri: (uri) => (uri.startsWith('bulkdata/') ? `/deid/${uri}` : undefined) });
    expect(rewritten['00283006']).toEqual({ vr: 'OW', BulkDataURI: '/deid/bulkdata/00283006' });
    expect(rewritten['00282000']).toBeUndefined();
  });

  test('Clean Descriptors keeps the harmless words of a description, without names, IDs, dates', () => {
    const c = contextFor({ ...DEFAULT_DEID_OPTIONS, cleanDescriptors: true });
    const out = deidentifyDicomJson({
      '00081030': { vr: 'LO', Value: ['CT CHEST Doe John 2019-03-04 MRN123456'] },
      '0008103E': { vr: 'LO', Value: ['AX T1 post contrast (Smithson)'] },
      '00100010': { vr: 'PN', Value: [{ Alphabetic: 'DOE^JOHN' }] },
      '00100020': { vr: 'LO', Value: ['MRN123456'] },
      '00081060': { vr: 'PN', Value: [{ Alphabetic: 'SMITHSON^ANNA' }] },
    }, c);
    expect(out['00081030'].Value).toEqual(['CT CHEST']);
    expect(out['0008103E'].Value).toEqual(['AX T1 post contrast']);
    expect(deidentifyDicomJson({ '00081030': { vr: 'LO', Value: ['CT CHEST'] } }, contextFor(DEFAULT_DEID_OPTIONS))['00081030']).toBeUndefined();
  });

  test('dates not listed in the table are shifted too under the modified-dates option, and kept without it', () => {
    const input: DicomJson = { '00143076': { vr: 'DA', Value: [SENTINEL_DATE] }, '0008041F': { vr: 'DT', Value: [`${SENTINEL_DATE}101010`] } };
    const shifted = deidentifyDicomJson(input, contextFor(DEFAULT_DEID_OPTIONS));
    expect(shifted['00143076'].Value).toEqual([expectedShiftedDate()]);
    expect(shifted['0008041F'].Value).toEqual([`${expectedShiftedDate()}101010`]);
    expect(deidentifyDicomJson(input, contextFor(NONE))['00143076'].Value).toEqual([SENTINEL_DATE]);
  });

  test('inside a D sequence (Content Sequence) unlisted free text becomes a dummy, opaque bytes go, codes stay', () => {
    const out = deidentifyDicomJson({
      '0040A730': { vr: 'SQ', Value: [{
        '0040A040': { vr: 'CS', Value: ['TEXT'] },
        '0040A160': { vr: 'UT', Value: ['Seen by Dr PHI_SENTINEL'] },
        '00189999': { vr: 'UN', InlineBinary: Buffer.from('PHI_SENTINEL').toString('base64') },
        '0040A043': { vr: 'SQ', Value: [{ '00080100': { vr: 'SH', Value: ['121071'] }, '00080104': { vr: 'LO', Value: ['Finding'] } }] },
      }] },
    }, contextFor(DEFAULT_DEID_OPTIONS));
    const item = out['0040A730'].Value![0] as DicomJson;
    expect(item['0040A040'].Value).toEqual(['TEXT']);
    expect(item['0040A160'].Value).toEqual(['ANONYMIZED']);
    expect(item['00189999']).toBeUndefined();
    expect((item['0040A043'].Value![0] as DicomJson)['00080104'].Value).toEqual(['Finding']);
  });

  test('a U row met with a text VR is mapped like a UID', () => {
    const ctx = contextFor(DEFAULT_DEID_OPTIONS);
    expect(deidentifyDicomJson({ '00081155': { vr: 'LO', Value: ['1.2.3.9'] } }, ctx)['00081155'].Value).toEqual([ctx.mapUid('1.2.3.9')]);
  });

  test('malformed JSON elements are dropped, not passed through or crashed on', () => {
    const out = deidentifyDicomJson({
      '00081030': { vr: 'LO', Value: 'PHI_SENTINEL' as unknown as unknown[] },
      '00180015': { Value: ['PHI_SENTINEL'] } as unknown as DicomJsonElement,
      '00081140': { vr: 'SQ', Value: [null, 'PHI_SENTINEL', { '00081155': { vr: 'UI', Value: ['1.2.3'] } }] },
      'not-a-tag': { vr: 'LO', Value: ['PHI_SENTINEL'] },
    }, contextFor({ ...DEFAULT_DEID_OPTIONS, cleanDescriptors: true }));
    expect(JSON.stringify(out)).not.toContain(PHI_SENTINEL);
    expect((out['00081140'].Value as DicomJson[])[2]['00081155'].Value).toEqual([contextFor(NONE).mapUid('1.2.3')]);
  });

  test('ages: over 89 become 090Y when retained; birth date is always emptied', () => {
    const options = { ...DEFAULT_DEID_OPTIONS, retainPatientCharacteristics: true };
    const c = contextFor(options);
    const input = (age: string): DicomJson => ({ '00101010': { vr: 'AS', Value: [age] }, '00100030': { vr: 'DA', Value: ['19200101'] } });
    expect(deidentifyDicomJson(input('095Y'), c)['00101010'].Value).toEqual(['090Y']);
    expect(deidentifyDicomJson(input('100Y'), c)['00101010'].Value).toEqual(['090Y']);
    expect(deidentifyDicomJson(input('PHI'), c)['00101010']).toEqual({ vr: 'AS' });
    expect(deidentifyDicomJson(input('089Y'), c)['00101010'].Value).toEqual(['089Y']);
    expect(deidentifyDicomJson(input('045Y'), c)['00100030']).toEqual({ vr: 'DA' });
    expect(deidentifyDicomJson(input('045Y'), contextFor(DEFAULT_DEID_OPTIONS))['00101010']).toBeUndefined();
  });
});
