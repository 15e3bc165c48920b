import type { QidoRow } from '../../../src/db/qido-search';
import { assertAcceptsJson } from '../../../src/dicomweb/qido-routes';
import { StudyResultCache } from '../../../src/dicomweb/study-result-cache';
import { STUDY_DEFAULTS_TEXT_TAGS, type StudyJsonPlan, type StudyJsonRow } from '../../../src/db/qido-search';
import {
  buildResult,
  datasetSelections,
  finishStudyJson,
  planReturn,
  planStudyJson,
  studyResultRows,
  studyResultUrlAt,
  studyResultUrlHead,
  writeStudyResultBytes,
  writeStudyResultBytesFrom,
  writeStudyResults,
  type ByteBuffers,
  type StudyResultBytes,
} from '../../../src/dicomweb/query-results';

/** A `qido_json` text (a written plan's row) as a result kept as bytes, in memory of its own (as StudyResultCache keeps them, one per block). */
function studyResultBytes(row: StudyJsonRow): StudyResultBytes {
  const memory = Buffer.from(row.json, 'utf8');
  return { studyUid: row.study_uid, memory, start: 0, end: memory.length, urlAt: studyResultUrlAt(row, memory.length) };
}

const row = (extra: Partial<QidoRow> = {}): QidoRow => ({
  study_uid: '1.2.3',
  study_num_series: 2,
  study_num_instances: 44,
  modalities: ['MR'],
  sop_classes: ['1.2.840.10008.5.1.4.1.1.4'],
  ...extra,
});

describe('QIDO-RS return attributes (PS3.18 10.6.3.3)', () => {
  test('study defaults include the computed counts and RetrieveURL', () => {
    const tags = planReturn('study', 'all', [], false).tags;
    expect(tags).toEqual(expect.arrayContaining(['00080061', '00201206', '00201208', '00081190', '0020000D', '00100010']));
  });

  test('series of all studies carry the study defaults; series of one study only its UID', () => {
    expect(planReturn('series', 'all', [], false).tags).toContain('00100010');
    const inStudy = planReturn('series', 'study', [], false).tags;
    expect(inStudy).toContain('0020000D');
    expect(inStudy).not.toContain('00100010');
  });

  test('instances of one series carry both parent UIDs but no series defaults', () => {
    const tags = planReturn('instance', 'series', [], false).tags;
    expect(tags).toEqual(expect.arrayContaining(['0020000D', '0020000E', '00080018', '00280010']));
    expect(tags).not.toContain('0008103E');
  });

  test('study attributes are cut from the study row, series attributes from the series row', () => {
    const plan = planReturn('series', 'all', [], false);
    const selections = datasetSelections(plan);
    expect(selections.study).toContain('00100010');
    expect(selections.series).toContain('0008103E');
    expect(selections.instance).toBeUndefined();
  });

  test('computed values are valid DICOM JSON', () => {
    const plan = planReturn('study', 'all', [], false);
    const result = buildResult(row(), plan, 'http://h/dicomweb');
    expect(result['00201206']).toEqual({ vr: 'IS', Value: [2] });
    expect(result['00080061']).toEqual({ vr: 'CS', Value: ['MR'] });
    expect(result['00081190']).toEqual({ vr: 'UR', Value: ['http://h/dicomweb/studies/1.2.3'] });
    expect(result['00080056']).toEqual({ vr: 'CS', Value: ['ONLINE'] });
  });

  test('a missing requested attribute is zero-length with its dictionary VR', () => {
    const result = buildResult(row({ study_dataset: {} }), planReturn('study', 'all', [], false), 'http://h/dicomweb');
    expect(result['00100010']).toEqual({ vr: 'PN' });
    expect(result['00080020']).toEqual({ vr: 'DA' });
  });

  test('RetrieveURL of an instance names study, series and instance', () => {
    const plan = planReturn('instance', 'all', [], false);
    const result = buildResult(row({ series_uid: '1.2.3.4', sop_instance_uid: '1.2.3.4.5', series_num_instances: 1 }), plan, 'http://h/dicomweb');
    expect(result['00081190'].Value).toEqual(['http://h/dicomweb/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5']);
  });

  test('relative BulkDataURIs become absolute at the instance level, nested ones too', () => {
    const plan = planReturn('instance', 'series', [], true);
    const result = buildResult(
      row({
        series_uid: '1.2.3.4',
        sop_instance_uid: '1.2.3.4.5',
        instance_dataset: {
          '00880200': { vr: 'SQ', Value: [{ '7FE00010': { vr: 'OW', BulkDataURI: 'bulkdata/00880200/0/7FE00010' } }] },
        },
      }),
      plan,
      'http://h/dicomweb',
    );
    expect((result['00880200'].Value?.[0] as Record<string, { BulkDataURI: string }>)['7FE00010'].BulkDataURI).toBe(
      'http://h/dicomweb/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5/bulkdata/00880200/0/7FE00010',
    );
  });

  test('relative BulkDataURIs are dropped at the study level', () => {
    const plan = planReturn('study', 'all', [], true);
    const result = buildResult(row({ study_dataset: { '00101010': { vr: 'AS', Value: ['040Y'] }, '00091010': { vr: 'OB', BulkDataURI: 'bulkdata/00091010' } } }), plan, 'http://h');
    expect(result['00091010']).toBeUndefined();
    expect(result['00101010']).toEqual({ vr: 'AS', Value: ['040Y'] });
  });
});

describe('study results written by the database', () => {
  test('the default plan keeps the requested stored keys, zero-length when absent, and drops the rest', () => {
    const p = planStudyJson(planReturn('study', 'all', [], false), 'http://h/dicomweb');
    expect(p.empty['00100010']).toEqual({ vr: 'PN' });
    expect(p.empty['00080020']).toEqual({ vr: 'DA' });
    expect(p.dropKeys).toContain('00081032');
    expect(p.dropKeys).not.toContain('00100010');
    expect(p.computed).toEqual(expect.arrayContaining(['00080056', '00080061', '00081190', '00201206', '00201208']));
    expect(p.computed).not.toContain('00080062');
    expect(p.studiesUrl).toBe('http://h/dicomweb/studies/');
  });

  test('includefield adds the attribute to what is kept', () => {
    const p = planStudyJson(planReturn('study', 'all', ['00081032', '00080062'], false), 'http://h');
    expect(p.dropKeys).not.toContain('00081032');
    expect(p.empty['00081032']).toEqual({ vr: 'SQ' });
    expect(p.computed).toContain('00080062');
  });

  test('includefield=all keeps the whole study dataset', () => {
    const p = planStudyJson(planReturn('study', 'all', [], true), 'http://h');
    expect(p.dropKeys).toBeNull();
    expect(p.empty).toEqual({});
  });

  test('the default study plan is what studies.qido_json holds; any other plan is not', () => {
    expect(planReturn('study', 'all', [], false).tags).toEqual(STUDY_DEFAULTS_TEXT_TAGS);
    expect(planStudyJson(planReturn('study', 'all', [], false), 'http://h').written).toBe(true);
    expect(planStudyJson(planReturn('study', 'all', ['00080080'], false), 'http://h').written).toBe(false);
    expect(planStudyJson(planReturn('study', 'all', [], true), 'http://h').written).toBe(false);
  });

  const plan = (written: boolean): StudyJsonPlan => ({ empty: {}, dropKeys: [], computed: [], studiesUrl: 'http://h/studies/', written });

  test('a row written by SQL is sent as written when nothing needs fixing', () => {
    const json = '{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}';
    expect(finishStudyJson({ study_uid: '1.2.3', json }, plan(false))).toBe(json);
  });

  test('a qido_json text gets its RetrieveURL filled in, in place', () => {
    const json = '{"00081030": {"vr": "LO"}, "00081190": {"vr": "UR"}, "00100010": {"vr": "PN"}}';
    const out = finishStudyJson({ study_uid: '1.2.3', json }, plan(true));
    expect(out).toBe('{"00081030": {"vr": "LO"}, "00081190": {"vr": "UR", "Value": ["http://h/studies/1.2.3"]}, "00100010": {"vr": "PN"}}');
  });

  test('a RetrieveURL of a UID that needs percent-encoding is encoded', () => {
    const json = '{"00081190": {"vr": "UR", "Value": ["http://h/studies/a b"]}, "0020000D": {"vr": "UI", "Value": ["a b"]}}';
    expect(JSON.parse(finishStudyJson({ study_uid: 'a b', json }, plan(false)))['00081190']).toEqual({ vr: 'UR', Value: ['http://h/studies/a%20b'] });
    const written = finishStudyJson({ study_uid: 'a"b', json: '{"00081190": {"vr": "UR"}}' }, plan(true));
    expect(JSON.parse(written)['00081190']).toEqual({ vr: 'UR', Value: ['http://h/studies/a%22b'] });
  });

  test('the body is the array of the finished rows, in order', () => {
    const rows = [
      { study_uid: '1.2', json: '{"00081190": {"vr": "UR"}, "0020000D": {"vr": "UI", "Value": ["1.2"]}}' },
      { study_uid: 'x y', json: '{"00081190": {"vr": "UR"}, "0020000D": {"vr": "UI", "Value": ["x y"]}}' },
      { study_uid: '1.3', json: '{"00081030": {"vr": "LO", "BulkDataURI": "bulkdata/x"}, "00081190": {"vr": "UR"}}' },
    ];
    const body = writeStudyResults(rows, plan(true));
    expect(JSON.parse(body)).toEqual([
      { '00081190': { vr: 'UR', Value: ['http://h/studies/1.2'] }, '0020000D': { vr: 'UI', Value: ['1.2'] } },
      { '00081190': { vr: 'UR', Value: ['http://h/studies/x%20y'] }, '0020000D': { vr: 'UI', Value: ['x y'] } },
      { '00081190': { vr: 'UR', Value: ['http://h/studies/1.3'] } },
    ]);
    expect(writeStudyResults([], plan(true))).toBe('[]');
    expect(writeStudyResults([rows[0]], plan(false))).toBe(`[${rows[0].json}]`);
  });

  /** Study rows of every kind a page can hold: ASCII, non-ASCII, no RetrieveURL, a UID to percent-encode, a BulkDataURI. */
  const MIXED_ROWS = [
    { study_uid: '1.2', json: '{"00081190": {"vr": "UR"}, "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Smith^Jo"}]}}' },
    { study_uid: '1.3', json: '{"00081030": {"vr": "LO", "Value": ["Müller – Kopf"]}, "00081190": {"vr": "UR"}, "00100010": {"vr": "PN", "Value": [{"Ideographic": "山田^太郎"}]}}' },
    { study_uid: '1.4', json: '{"00081030": {"vr": "LO", "Value": ["\u{1F600} emoji"]}, "00081190": {"vr": "UR"}}' },
    { study_uid: '1.5', json: '{"00100010": {"vr": "PN"}}' },
    { study_uid: '1.51', json: '{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Ñandú"}]}}' },
    { study_uid: 'x/y', json: '{"00081190": {"vr": "UR"}, "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Åsa"}]}}' },
    { study_uid: '1.6', json: '{"00080090": {"vr": "PN", "Value": [{"Alphabetic": "ARTHUR"}]}, "00081190": {"vr": "UR"}}' },
    { study_uid: '1.7', json: '{"00081030": {"vr": "LO", "Value": ["BulkDataURI as a word"]}, "00081190": {"vr": "UR"}}' },
    { study_uid: '1.8', json: '{"00081030": {"vr": "LO", "BulkDataURI": "bulkdata/x"}, "00081190": {"vr": "UR"}, "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Jérôme"}]}}' },
    { study_uid: '1.9', json: '{"00081190": {"vr": "UR"}}' },
  ];

  test('the body is the finished rows joined, for ASCII, non-ASCII and rows that need finishing', () => {
    const rows = MIXED_ROWS;
    for (const written of [true, false]) {
      const expected = `[${rows.map((r) => finishStudyJson(r, plan(written))).join(',')}]`;
      expect(writeStudyResults(rows, plan(written))).toBe(expected);
    }
  });

  /** Buffers as the routes hand them out, counting what is taken and given back. */
  const counted = () => {
    const log = { taken: [] as number[], given: 0 };
    const buffers: ByteBuffers = {
      take: (size) => {
        log.taken.push(size);
        return Buffer.alloc(size, 0xee);
      },
      give: () => {
        log.given++;
      },
    };
    return { log, buffers };
  };
  const bytesOf = (rows: Array<{ study_uid: string; json: string }>, p: StudyJsonPlan) => {
    const { buffer, length } = writeStudyResultBytes(rows, p, counted().buffers);
    return buffer.subarray(0, length);
  };

  test('the bytes sent are the UTF-8 of the text, for ASCII, non-ASCII and rows that need finishing, alone or together', () => {
    const rows = MIXED_ROWS;
    for (const written of [true, false]) {
      for (const page of [rows, [], ...rows.map((r) => [r])]) {
        expect(bytesOf(page, plan(written)).equals(Buffer.from(writeStudyResults(page, plan(written)), 'utf8'))).toBe(true);
      }
    }
  });

  test('results kept as bytes are written as the same bytes as the rows they were made of, and read back as those rows', () => {
    for (const page of [MIXED_ROWS, [], ...MIXED_ROWS.map((r) => [r])]) {
      const results = page.map((r) => studyResultBytes(r));
      expect(studyResultRows(results)).toEqual(page);
      const { log, buffers } = counted();
      const { buffer, length } = writeStudyResultBytesFrom(results, plan(true), buffers);
      // One buffer, of the exact size.
      expect(log.taken).toEqual([length]);
      expect(buffer.subarray(0, length).equals(bytesOf(page, plan(true)))).toBe(true);
    }
  });

  test('results kept finished under a RetrieveURL head are written as the same bytes as their rows, under that head or another, in any order', () => {
    for (const studiesUrl of ['http://h/studies/', 'https://elsewhere.example/dicomweb/studies/']) {
      const cache = new StudyResultCache(1 << 20);
      const results = cache.add(
        MIXED_ROWS.map((r, i) => ({ ...r, id: String(i + 1), rev: '0' })),
        studyResultUrlHead({ ...plan(true), studiesUrl }),
      );
      expect(results.some((r) => r.head)).toBe(true);
      expect(studyResultRows(results)).toEqual(MIXED_ROWS);
      for (const page of [results, results.slice(2), [results[3], results[0], results[1], results[2]], results.slice(0, 1), []]) {
        const { log, buffers } = counted();
        const { buffer, length } = writeStudyResultBytesFrom(page, plan(true), buffers);
        expect(log.taken).toEqual([length]);
        expect(buffer.subarray(0, length).equals(bytesOf(studyResultRows(page), plan(true)))).toBe(true);
      }
    }
  });

  test('a kept result marks where its RetrieveURL goes in bytes, or that it needs finishing', () => {
    const [ascii, nonAscii, emoji, noUrl, , oddUid, , , bulk] = MIXED_ROWS.map((r) => studyResultBytes(r));
    expect(ascii.urlAt).toBe(1);
    expect(nonAscii.memory.subarray(nonAscii.urlAt).toString('utf8').startsWith('"00081190": {"vr": "UR"}')).toBe(true);
    expect(nonAscii.urlAt).toBeGreaterThan(MIXED_ROWS[1].json.indexOf('"00081190"'));
    expect(emoji.memory.subarray(emoji.urlAt).toString('utf8').startsWith('"00081190"')).toBe(true);
    expect([noUrl.urlAt, oddUid.urlAt, bulk.urlAt]).toEqual([-1, -1, -1]);
  });

  test('a page whose UTF-8 outgrows the first buffer is moved to a larger one, the first given back', () => {
    const rows = Array.from({ length: 50 }, (_, i) => ({ study_uid: `1.${i}`, json: `{"00081190": {"vr": "UR"}, "00100010": {"vr": "PN", "Value": [{"Ideographic": "${'山田'.repeat(40)}"}]}}` }));
    const { log, buffers } = counted();
    const { buffer, length } = writeStudyResultBytes(rows, plan(true), buffers);
    expect(log.taken.length).toBeGreaterThan(1);
    expect(log.given).toBe(log.taken.length - 1);
    expect(buffer.subarray(0, length).equals(Buffer.from(writeStudyResults(rows, plan(true)), 'utf8'))).toBe(true);
  });

  test('a BulkDataURI in one row of a page is dropped from that row only; the others are spliced', () => {
    const rows = [
      { study_uid: '1.2', json: '{"00081190": {"vr": "UR"}, "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Ñandú"}]}}' },
      { study_uid: '1.3', json: '{"00081030": {"vr": "LO", "BulkDataURI": "bulkdata/x"}, "00081190": {"vr": "UR"}}' },
    ];
    const body = JSON.parse(writeStudyResults(rows, plan(true)));
    expect(body).toEqual([
      { '00081190': { vr: 'UR', Value: ['http://h/studies/1.2'] }, '00100010': { vr: 'PN', Value: [{ Alphabetic: 'Ñandú' }] } },
      { '00081190': { vr: 'UR', Value: ['http://h/studies/1.3'] } },
    ]);
  });

  test('relative BulkDataURIs are dropped from written rows, attribute order kept', () => {
    const json = '{"00081030": {"vr": "LO", "BulkDataURI": "bulkdata/x"}, "00101010": {"vr": "AS", "Value": ["040Y"]}, "0020000D": {"vr": "UI"}}';
    const out = finishStudyJson({ study_uid: '1.2', json }, plan(false));
    expect(Object.keys(JSON.parse(out))).toEqual(['00101010', '0020000D']);
  });
});

describe('QIDO-RS Accept negotiation (PS3.18 8.7.3)', () => {
  test.each([undefined, '', 'application/dicom+json', 'application/json', '*/*', 'text/html, application/json;q=0.5', 'application/*'])(
    'accepts %p',
    (accept) => {
      expect(() => assertAcceptsJson(accept)).not.toThrow();
    },
  );

  test('refuses XML with a 406', () => {
    expect(() => assertAcceptsJson('multipart/related; type="application/dicom+xml"')).toThrow(expect.objectContaining({ status: 406 }));
  });

  test('refuses JSON at q=0', () => {
    expect(() => assertAcceptsJson('application/dicom+json;q=0')).toThrow(expect.objectContaining({ status: 406 }));
  });
});
