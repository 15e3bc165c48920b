import fs from 'node:fs';
import request from 'supertest';
import { findQidoStudyPageTexts } from '../../../src/db/qido-search';
import { createSyntheticInstance, newUid } from '../../../src/generate/synthetic-dicom';
import { prepareSearch, searchForStudies, type SearchResponse } from '../../../src/dicomweb/qido-rs';
import { planStudyJson, type ByteBuffers } from '../../../src/dicomweb/query-results';
import { StudyResultCache } from '../../../src/dicomweb/study-result-cache';
import { restrictStudiesToProjects } from '../../../src/auth/project-filters';
import { buildMultipart } from '../../helpers/multipart-body';
import { sharedData, startTestApp, type TestApp } from '../../helpers/test-app';
import { binaryBody } from '../../helpers/binary-body';

/**
 * The study list by date answered from study results kept in memory (StudyResultCache, checked
 * against studies.rev): the bytes must be those of the uncached path, whatever the cache holds.
 */
const BASE = 'http://h/dicomweb';
const PAGE = { StudyDate: '20190301-20190331' };

describe('QIDO-RS study list by date from kept study results', () => {
  let t: TestApp;
  const studies: string[] = [];

  async function stow(parts: Buffer[]) {
    const { body, contentType } = buildMultipart(parts);
    const res = await request(t.http).post('/dicomweb/studies').set('Content-Type', contentType).send(body);
    if (res.status !== 200) throw new Error(`STOW ${res.status}: ${JSON.stringify(res.body).slice(0, 500)}`);
  }

  const buffers: ByteBuffers = { take: (size) => Buffer.alloc(size), give: () => undefined };
  const bytesOf = (res: SearchResponse) => {
    const { buffer, length } = res.writeBytes!(buffers);
    return buffer.subarray(0, length);
  };

  /** The answer's bytes with the given cache (or none: the uncached path, which reads every text). */
  async function page(query: Record<string, unknown>, cache?: StudyResultCache) {
    const res = await searchForStudies({ db: t.app.db, studyResults: cache }, { query, dicomwebBaseUrl: BASE });
    return { res, bytes: bytesOf(res) };
  }

  async function expectUncachedBytes(query: Record<string, unknown>, cache: StudyResultCache) {
    const cached = await page(query, cache);
    const uncached = await page(query);
    expect(cached.bytes.equals(uncached.bytes)).toBe(true);
    expect(cached.res.warnings).toEqual(uncached.res.warnings);
    expect(cached.res.json).toBe(uncached.res.json);
    return cached;
  }

  const countOf = (bytes: Buffer, uid: string) => {
    const found = (JSON.parse(bytes.toString('utf8')) as Array<Record<string, { Value?: unknown[] }>>).find((r) => r['0020000D'].Value?.[0] === uid);
    return found && found['00201208'].Value?.[0];
  };

  beforeAll(async () => {
    t = await startTestApp();
    for (let day = 1; day <= 6; day++) {
      const uid = newUid();
      studies.push(uid);
      await stow([createSyntheticInstance({ studyInstanceUID: uid, patientID: `CACHE-${day}`, studyDate: `201903${String(day).padStart(2, '0')}`, studyTime: '101500' }).bytes]);
    }
    // A non-ASCII name, a UID to percent-encode, a text too long for the covering index, a NULL text.
    const named = fs.readFileSync(sharedData('dicom/charset/pydicom-charset__chrH31.dcm'));
    await stow([named]);
    const [{ id: namedPk }] = await t.app.db.knex('studies').orderBy('id', 'desc').limit(1).select('id');
    const odd = newUid();
    await stow([createSyntheticInstance({ studyInstanceUID: odd, patientID: 'CACHE-ODD', studyDate: '20190310' }).bytes]);
    await stow([createSyntheticInstance({ patientID: 'CACHE-LONG', studyDate: '20190311', studyDescription: 'long '.repeat(500) }).bytes]);
    const knex = t.app.db.knex;
    await knex('studies').where({ study_uid: odd }).update({ study_uid: `${odd} x/y` });
    // Into the page's month (the column is matched; the text keeps the file's own StudyDate).
    await knex('studies').where({ id: namedPk }).update({ study_date: '2019-03-12' });
    await knex.raw('ALTER TABLE studies DISABLE TRIGGER studies_qido_json');
    try {
      await knex('studies').where({ study_uid: studies[5] }).update({ qido_json: null });
    } finally {
      await knex.raw('ALTER TABLE studies ENABLE TRIGGER studies_qido_json');
    }
  });
  afterAll(async () => {
    await t?.close();
  });

  /** Reads a page until the cache reads ids and revisions first (recent pages found their results kept). */
  async function warm(cache: StudyResultCache, query: Record<string, unknown> = PAGE) {
    for (let round = 0; round < 10 && !cache.expectsHits(); round++) await expectUncachedBytes(query, cache);
    expect(cache.expectsHits()).toBe(true);
  }

  test('a page read cold (whole), then warm (ids and revisions only), has the bytes of the uncached path', async () => {
    const cache = new StudyResultCache();
    const cold = await expectUncachedBytes(PAGE, cache);
    const rows = (JSON.parse(cold.bytes.toString('utf8')) as unknown[]).length;
    expect(rows).toBeGreaterThanOrEqual(9);
    expect(cache.stats()).toMatchObject({ hits: 0, misses: rows, entries: rows, textsRead: rows });
    await warm(cache);
    const before = cache.stats();
    await expectUncachedBytes(PAGE, cache);
    expect(cache.stats().hits - before.hits).toBe(rows);
    expect(cache.stats().textsRead).toBe(before.textsRead);
    // The text has the odd UID percent-encoded and the non-ASCII name as UTF-8.
    expect(cold.res.json).toContain('%20x%2Fy');
    expect(cold.bytes.length).toBeGreaterThan(cold.res.json!.length);
  });

  test('every page of the study list (open ends, one day, paged) has the uncached bytes, on every call', async () => {
    const cache = new StudyResultCache();
    const queries = [{}, PAGE, { StudyDate: '20190303' }, { StudyDate: '20190305-' }, { StudyDate: '-20190302' }, { ...PAGE, limit: '3', offset: '2' }, { ...PAGE, limit: '2' }];
    for (let round = 0; round < 3; round++) for (const query of queries) await expectUncachedBytes(query, cache);
    expect(cache.stats().hits).toBeGreaterThan(0);
  });

  test('after a STOW changes one study, every process serves its new text (one text read each), the others from memory', async () => {
    // Two caches: two server processes on one database.
    const caches = [new StudyResultCache(), new StudyResultCache()];
    for (const cache of caches) await warm(cache);
    const [{ rev: before }] = await t.app.db.knex('studies').where({ study_uid: studies[1] }).select('rev');
    await stow([createSyntheticInstance({ studyInstanceUID: studies[1], patientID: 'CACHE-2', studyDate: '20190302', studyTime: '101500' }).bytes]);
    const [{ rev: after }] = await t.app.db.knex('studies').where({ study_uid: studies[1] }).select('rev');
    expect(Number(after)).toBeGreaterThan(Number(before));
    for (const cache of caches) {
      const before = cache.stats();
      const { bytes } = await expectUncachedBytes(PAGE, cache);
      expect(countOf(bytes, studies[1])).toBe(2);
      expect(cache.stats().misses - before.misses).toBe(1);
      expect(cache.stats().textsRead - before.textsRead).toBe(1);
    }
  });

  test('a deleted study is left out, kept text or not', async () => {
    const uid = newUid();
    await stow([createSyntheticInstance({ studyInstanceUID: uid, patientID: 'CACHE-GONE', studyDate: '20190315' }).bytes]);
    const [cold, warmed] = [new StudyResultCache(), new StudyResultCache()];
    await expectUncachedBytes(PAGE, cold);
    await warm(warmed);
    expect(countOf((await page(PAGE, warmed)).bytes, uid)).toBe(1);
    expect((await request(t.http).delete(`/dicomweb/studies/${uid}`)).status).toBe(204);
    for (const cache of [cold, warmed]) {
      const { bytes } = await expectUncachedBytes(PAGE, cache);
      expect(countOf(bytes, uid)).toBeUndefined();
    }
  });

  test('a study deleted between the read of the page and the read of its texts is missing from the texts', async () => {
    const knex = t.app.db.knex;
    const uid = newUid();
    await stow([createSyntheticInstance({ studyInstanceUID: uid, patientID: 'CACHE-GONE-2', studyDate: '20190316' }).bytes]);
    const ids = (await knex('studies').whereIn('study_uid', [uid, studies[0]]).select('id')).map((r: { id: string }) => String(r.id));
    expect((await request(t.http).delete(`/dicomweb/studies/${uid}`)).status).toBe(204);
    const { search, plan } = prepareSearch('study', { query: PAGE, dicomwebBaseUrl: BASE });
    const read = await findQidoStudyPageTexts(knex, search, planStudyJson(plan, BASE), ids);
    expect(read.map((r) => r.study_uid)).toEqual([studies[0]]);
  });

  test('results kept under one base URL are answered with the RetrieveURLs of another base URL', async () => {
    const cache = new StudyResultCache();
    const other = 'https://elsewhere.example/pacs/dicomweb';
    const under = async (dicomwebBaseUrl: string, studyResults?: StudyResultCache) => bytesOf(await searchForStudies({ db: t.app.db, studyResults }, { query: PAGE, dicomwebBaseUrl }));
    for (let round = 0; round < 3; round++) {
      for (const base of [BASE, other]) {
        const cached = await under(base, cache);
        expect(cached.equals(await under(base))).toBe(true);
        expect(cached.toString('utf8')).toContain(`${base}/studies/${studies[0]}`);
      }
    }
    expect(cache.stats().hits).toBeGreaterThan(0);
  });

  test('with a cap of 0 nothing is kept and every page has the uncached bytes', async () => {
    const cache = new StudyResultCache(0);
    for (let round = 0; round < 2; round++) await expectUncachedBytes(PAGE, cache);
    expect(cache.stats()).toMatchObject({ hits: 0, entries: 0, bytes: 0 });
  });

  test('a cache too small for the page evicts and still gives the uncached bytes', async () => {
    const cache = new StudyResultCache(6 * 1024);
    for (let round = 0; round < 6; round++) await expectUncachedBytes(PAGE, cache);
    const stats = cache.stats();
    expect(stats.evictions).toBeGreaterThan(0);
    expect(stats.bytes).toBeLessThanOrEqual(6 * 1024);
  });

  test('a restricted search and other searches do not use the kept results', async () => {
    const cache = new StudyResultCache();
    const restrictStudies = restrictStudiesToProjects(['none-such']);
    const res = await searchForStudies({ db: t.app.db, studyResults: cache }, { query: PAGE, dicomwebBaseUrl: BASE }, { restrictStudies });
    expect(res.body).toEqual([]);
    await page({ ...PAGE, PatientID: 'CACHE-1' }, cache);
    await page({ ...PAGE, includefield: 'SOPClassesInStudy' }, cache);
    expect(cache.stats()).toMatchObject({ hits: 0, misses: 0, entries: 0 });
  });

  test('the revision grows when the text or the UID changes, not on other updates', async () => {
    const knex = t.app.db.knex;
    const rev = async (uid: string) => Number((await knex('studies').where({ study_uid: uid }).first('rev')).rev);
    const start = await rev(studies[2]);
    await knex('studies').where({ study_uid: studies[2] }).update({ updated_at: knex.fn.now() });
    expect(await rev(studies[2])).toBe(start);
    await knex('studies').where({ study_uid: studies[2] }).update({ num_instances: knex.raw('num_instances') });
    expect(await rev(studies[2])).toBe(start);
    await knex('studies').where({ study_uid: studies[2] }).update({ rev: 0 });
    expect(await rev(studies[2])).toBe(start);
    await knex('studies').where({ study_uid: studies[2] }).update({ num_series: knex.raw('num_series + 1') });
    expect(await rev(studies[2])).toBe(start + 1);
    const moved = `${studies[2]}.9`;
    await knex('studies').where({ study_uid: studies[2] }).update({ study_uid: moved });
    expect(await rev(moved)).toBe(start + 2);
    await knex('studies').where({ study_uid: moved }).update({ study_uid: studies[2], num_series: knex.raw('num_series - 1') });
  });

  test('over HTTP, repeated study pages by date send the bytes of the uncached path', async () => {
    const httpBytes = async (query: Record<string, unknown>) => {
      const res = await request(t.http)
        .get('/dicomweb/studies')
        .query(query)
        .set('X-Forwarded-Host', 'h')
        .buffer(true)
        .parse(binaryBody);
      expect(res.status).toBe(200);
      return res.body as Buffer;
    };
    for (const query of [PAGE, PAGE, { ...PAGE, limit: '2', offset: '1' }, PAGE]) {
      expect((await httpBytes(query)).equals((await page(query)).bytes)).toBe(true);
    }
  });
});
