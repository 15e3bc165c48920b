import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildMultipart } from '../../helpers/multipart-body';
import {
  authLine,
  errorComment,
  failedInstances,
  getJson,
  rawExchange,
  retrieveInstance,
  runPool,
  stow,
  stowRaw,
  storedInstances,
  twoRequestsOneConnection,
  type StowOutcome,
} from '../../helpers/fault-client';
import { aggregateMismatches, danglingRows, duplicateRows, openIndex, sha256, stagingLeftovers } from '../../helpers/fault-check';
import { createFaultEnv, listFiles, report, sampleRss, sleep, type FaultEnv, type FaultServer, type RssSampler } from '../../helpers/fault-server';
import {
  buildInstance,
  byteFlips,
  createRng,
  deflateBomb,
  deflatedInstance,
  instancePrefix,
  maximalLengths,
  nestedSequenceDefined,
  nestedSequenceUndefined,
  seededUid,
  truncations,
  type FuzzCase,
} from '../../helpers/fuzz-dicom';
import { sharedData } from '../../helpers/test-app';

/**
 * Hostile input against a server child process: every malformed shared file, a seeded fuzz
 * corpus, decompression and nesting bombs, odd multipart framing, a 4 GB Content-Length with
 * a short body, and UIDs that try to climb out of the storage root. Every request must get a
 * 4xx or a STOW failure reason within a deadline, the server's memory stays bounded, it never
 * crashes, and it still stores and returns a valid instance byte-identical afterwards.
 */

const SEED = 20261122;
/** Every answer within this (the 256 MiB streamed request gets STREAM_DEADLINE_MS). */
const DEADLINE_MS = 15_000;
const STREAM_DEADLINE_MS = 60_000;
/**
 * Peak RSS may exceed the warmed-up RSS by at most this much. The embedded engine gets more:
 * PGlite's WebAssembly memory is touched lazily as PostgreSQL warms up (its RSS was seen
 * anywhere between 490 and 850 MB right after start), which says nothing about input handling.
 */
const RSS_HEADROOM_KB = (process.env.TEST_DB === 'embedded' ? 640 : 384) * 1024;

const rng = createRng(SEED);
const ids = () => ({ studyInstanceUID: seededUid(rng), seriesInstanceUID: seededUid(rng), sopInstanceUID: seededUid(rng) });

interface Acknowledged {
  study: string;
  series: string;
  /** Every variant acknowledged under this SOP Instance UID (the last one stored wins). */
  variants: Buffer[];
}

/** Preamble + "DICM" (PS3.10 7.1). */
function isPart10(bytes: Buffer): boolean {
  return bytes.length >= 132 && bytes.toString('latin1', 128, 132) === 'DICM';
}

describe('bad input never breaks the server', () => {
  let env: FaultEnv;
  let server: FaultServer;
  let rss: RssSampler;
  let baselineKb = 0;
  let filesBefore: string[] = [];
  const acknowledged = new Map<string, Acknowledged>();
  const escapeMarker = `il-escape-${randomBytes(6).toString('hex')}`;

  /** Checks one answer against the rules; returns what is wrong (empty when all is well). */
  function judge(c: Pick<FuzzCase, 'name' | 'expect' | 'reason'>, r: StowOutcome, bytes?: Buffer, deadline = DEADLINE_MS): string[] {
    const problems: string[] = [];
    const label = `${c.name}: ${r.status}${r.error ? ` (${r.error})` : ''}`;
    if (r.status === 0) return [`${label}: no answer`];
    if (r.status >= 500) problems.push(`${label}: server error ${JSON.stringify(r.body)}`);
    if (r.ms > deadline) problems.push(`${label}: answered after ${r.ms} ms`);
    const stored = storedInstances(r.body);
    const failed = failedInstances(r.body);
    if (r.status === 200 || r.status === 202) {
      if (stored.length === 0) problems.push(`${label}: success without a ReferencedSOPSequence`);
      if (c.expect === 'reject') problems.push(`${label}: stored an instance that must be refused`);
      for (const s of stored) {
        const m = /\/studies\/([^/]+)\/series\/([^/]+)\/instances\/([^/]+)$/.exec(s.retrieveUrl);
        if (!m || !bytes) continue;
        const entry = acknowledged.get(s.sopInstanceUID) ?? { study: m[1], series: m[2], variants: [] };
        entry.study = m[1];
        entry.series = m[2];
        entry.variants.push(bytes);
        acknowledged.set(s.sopInstanceUID, entry);
      }
    } else if (r.status === 409) {
      if (failed.length === 0) problems.push(`${label}: 409 without a FailedSOPSequence`);
      for (const f of failed) {
        if (!Number.isInteger(f.reason)) problems.push(`${label}: failure without a FailureReason`);
        if (c.reason !== undefined && f.reason !== c.reason) {
          problems.push(`${label}: FailureReason 0x${f.reason?.toString(16)}, expected 0x${c.reason.toString(16)}`);
        }
      }
    } else if (r.status >= 400 && r.status < 500) {
      if (!errorComment(r.body)) problems.push(`${label}: 4xx without an ErrorComment`);
    } else {
      problems.push(`${label}: unexpected status`);
    }
    return problems;
  }

  /** Sends each case as a one-part STOW request, `concurrency` at a time; returns the problems found. */
  async function sendAll(cases: FuzzCase[], concurrency = 4): Promise<string[]> {
    const problems: string[] = [];
    await runPool(cases, concurrency, async (c) => {
      const r = await stow(server.baseUrl, [c.bytes], { timeoutMs: DEADLINE_MS + 5000 });
      problems.push(...judge(c, r, c.bytes));
    });
    return problems;
  }

  beforeAll(async () => {
    env = await createFaultEnv();
    server = await env.start();
    rss = sampleRss(server.pid, 50);
    // Warm up on valid requests, then take the baseline.
    for (let i = 0; i < 10; i++) {
      const inst = buildInstance({ ...ids(), seed: i });
      const r = await stow(server.baseUrl, [inst]);
      expect(r.status).toBe(200);
      await retrieveInstance(server.baseUrl, { study: '-', series: '-', instance: '-' });
    }
    await sleep(500);
    const t = rss.samples[rss.samples.length - 1].at;
    baselineKb = rss.medianBetween(t - 400, t + 1);
    filesBefore = listFiles(env.dataDir, ['pg']);
  }, 180_000);

  afterAll(async () => {
    rss?.stop();
    await env?.close();
  });

  test('every file in shared/data/dicom/malformed gets a 4xx, a failure reason or a clean store', async () => {
    const dir = sharedData('dicom/malformed');
    const files = fs.readdirSync(dir).filter((f) => f.endsWith('.dcm'));
    expect(files.length).toBeGreaterThanOrEqual(20);
    const pinned: Record<string, number> = {
      'pydicom__MR_truncated.dcm': 0xc000,
      'orthanc__2026-05-26-oob-monochrome-65535.dcm': 0xc000,
    };
    const cases: FuzzCase[] = files.map((f) => ({
      name: f,
      bytes: fs.readFileSync(path.join(dir, f)),
      expect: pinned[f] !== undefined ? 'reject' : 'any',
      reason: pinned[f],
    }));
    expect(await sendAll(cases)).toEqual([]);
  });

  test('a synthetic and a real instance truncated at every 1/100 of their length', async () => {
    const synthetic = buildInstance({ ...ids(), seed: 1 });
    const real = fs.readFileSync(sharedData('dicom/transfer-syntax/pydicom__MR_small.dcm'));
    const cases = [...truncations(synthetic, 100), ...truncations(real, 100)];
    expect(cases).toHaveLength(200);
    expect(await sendAll(cases)).toEqual([]);
  });

  test('seeded random byte flips (300 variants)', async () => {
    const base = buildInstance({ ...ids(), seed: 2 });
    const cases = byteFlips(base, SEED, 300);
    // Same seed, same corpus: a failing case can be regenerated from its name.
    expect(byteFlips(base, SEED, 300).map((c) => sha256(c.bytes))).toEqual(cases.map((c) => sha256(c.bytes)));
    expect(await sendAll(cases)).toEqual([]);
  });

  test('every element length set to 0xFFFFFFFF (0xFFFF for 16-bit lengths)', async () => {
    const base = buildInstance({ ...ids(), seed: 3 });
    const cases = maximalLengths(base);
    expect(cases.length).toBeGreaterThan(20);
    expect(await sendAll(cases)).toEqual([]);
  });

  test('a sequence nested 10,000 deep is refused with 0xC000, with defined and undefined lengths', async () => {
    const cases: FuzzCase[] = [
      { name: 'nested 10000 undefined', bytes: buildInstance({ ...ids(), extra: nestedSequenceUndefined(10_000) }), expect: 'reject', reason: 0xc000 },
      { name: 'nested 10000 defined', bytes: buildInstance({ ...ids(), extra: nestedSequenceDefined(10_000) }), expect: 'reject', reason: 0xc000 },
    ];
    expect(await sendAll(cases, 2)).toEqual([]);
    // The well-nested twin (3 levels) is a valid instance: the limit is about depth, not sequences.
    const twin = buildInstance({ ...ids(), extra: nestedSequenceDefined(3) });
    const ok = await stow(server.baseUrl, [twin]);
    expect(judge({ name: 'nested 3', expect: 'any' }, ok, twin)).toEqual([]);
    expect(ok.status).toBe(200);
  });

  test('a declared 65535x65535 image: short, cut off, and 256 MiB streamed, all 0xC000 in bounded memory', async () => {
    const declared = 65535 * 65535; // 8-bit: 4,294,836,225 bytes, still a 32-bit length
    const small: FuzzCase = {
      name: '65535x65535 with 64 pixel bytes',
      bytes: buildInstance({ ...ids(), rows: 65535, columns: 65535, bitsAllocated: 8, pixels: Buffer.alloc(64), declaredPixelLength: 64 }),
      expect: 'reject',
      reason: 0xc000,
    };
    const cut: FuzzCase = {
      name: '65535x65535 declaring 4 GB, 1 MiB sent',
      bytes: Buffer.concat([instancePrefix({ ...ids(), rows: 65535, columns: 65535, bitsAllocated: 8 }, declared), Buffer.alloc(1024 * 1024, 0x55)]),
      expect: 'reject',
      reason: 0xc000,
    };
    expect(await sendAll([small, cut], 2)).toEqual([]);

    // 256 MiB of pixel data streamed: spooled to disk and hashed, never held in memory.
    const before = rss.max();
    const boundary = `b-${randomBytes(8).toString('hex')}`;
    const prefix = instancePrefix({ ...ids(), rows: 65535, columns: 65535, bitsAllocated: 8 }, declared);
    const block = Buffer.alloc(1024 * 1024, 0xa5);
    async function* body(): AsyncGenerator<Buffer> {
      yield Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`);
      yield prefix;
      for (let i = 0; i < 256; i++) yield block;
      yield Buffer.from(`\r\n--${boundary}--\r\n`);
    }
    const r = await stowRaw(server.baseUrl, body(), `multipart/related; type="application/dicom"; boundary=${boundary}`, {
      timeoutMs: STREAM_DEADLINE_MS,
    });
    expect(judge({ name: '65535x65535 streamed 256 MiB', expect: 'reject', reason: 0xc000 }, r, undefined, STREAM_DEADLINE_MS)).toEqual([]);
    // Far less than the 256 MiB that went through.
    expect(rss.max() - Math.max(before, baselineKb)).toBeLessThan(160 * 1024);
    expect(stagingLeftovers(env.config)).toEqual([]);
  }, 120_000);

  test('deflate bombs (Deflated Explicit VR LE inflating to GBs) are refused with 0xA700, fast and in bounded memory', async () => {
    const huge = deflateBomb('huge-element', ids());
    const itemBomb = deflateBomb('many-items', ids());
    expect(huge.length).toBeLessThan(4 * 1024 * 1024); // inflates to 2 GiB
    expect(itemBomb.length).toBeLessThan(4 * 1024 * 1024); // inflates to 1 GiB
    const cases: FuzzCase[] = [
      { name: 'deflate bomb: 2 GiB element', bytes: huge, expect: 'reject', reason: 0xa700 },
      { name: 'deflate bomb: 134M empty items', bytes: itemBomb, expect: 'reject', reason: 0xa700 },
    ];
    expect(await sendAll(cases, 1)).toEqual([]);
    // Both at once, twice over: the caps hold per instance.
    expect(await sendAll([...cases, ...cases], 4)).toEqual([]);
    // A deflated instance that is not a bomb is stored.
    const fine = deflatedInstance({ ...ids(), seed: 9 });
    const r = await stow(server.baseUrl, [fine]);
    expect(judge({ name: 'deflated valid', expect: 'any' }, r, fine)).toEqual([]);
    expect(r.status).toBe(200);
  });

  test('odd multipart framing gets a 400 or a per-part failure; legal oddities are stored', async () => {
    const instances = Array.from({ length: 14 }, (_, n) => buildInstance({ ...ids(), seed: 100 + n }));
    const ok = (n: number) => instances[n];
    const part = (boundary: string, bytes: Buffer, headers = 'Content-Type: application/dicom\r\n') =>
      Buffer.concat([Buffer.from(`--${boundary}\r\n${headers}\r\n`), bytes, Buffer.from('\r\n')]);
    const close = (boundary: string) => Buffer.from(`--${boundary}--\r\n`);
    const ct = (boundary: string) => `multipart/related; type="application/dicom"; boundary="${boundary}"`;
    const longest = `${"'()+_,-./:=?".repeat(5)}0123456789`; // 70 characters, RFC 2046 bchars
    interface Framing {
      name: string;
      body: Buffer;
      contentType: string;
      stored: number;
      status?: number;
      /** The instance a storing framing carries. */
      carries?: number;
    }
    const b = 'frame-boundary';
    const framings: Framing[] = [
      { name: '70-character boundary', body: Buffer.concat([part(longest, ok(1)), close(longest)]), contentType: ct(longest), stored: 1, carries: 1 },
      { name: '1-character boundary', body: Buffer.concat([part('x', ok(2)), close('x')]), contentType: ct('x'), stored: 1, carries: 2 },
      { name: 'boundary over 200 characters', body: Buffer.concat([part('y'.repeat(201), ok(3)), close('y'.repeat(201))]), contentType: ct('y'.repeat(201)), stored: 0, status: 400 },
      { name: 'empty boundary parameter', body: Buffer.concat([part('', ok(4)), close('')]), contentType: 'multipart/related; type="application/dicom"; boundary=""', stored: 0, status: 400 },
      { name: 'body framed with another boundary', body: Buffer.concat([part('other', ok(5)), close('other')]), contentType: ct(b), stored: 0, status: 400 },
      { name: 'LF line ends only', body: Buffer.from(`--${b}\nContent-Type: application/dicom\n\n${ok(6).toString('latin1')}\n--${b}--\n`, 'latin1'), contentType: ct(b), stored: 0, status: 400 },
      { name: 'no closing delimiter', body: part(b, ok(7)), contentType: ct(b), stored: 0, status: 400 },
      { name: 'garbage after a delimiter', body: Buffer.concat([part(b, ok(8)), Buffer.from(`--${b}junk\r\n`), close(b)]), contentType: ct(b), stored: 0, status: 400 },
      { name: 'preamble, epilogue and transport padding', body: Buffer.concat([Buffer.from('preamble text\r\n'), Buffer.from(`--${b}  \t\r\nContent-Type: application/dicom\r\n\r\n`), ok(9), Buffer.from(`\r\n--${b}--\r\nepilogue`)]), contentType: ct(b), stored: 1, carries: 9 },
      { name: 'a part without headers', body: Buffer.concat([Buffer.from(`--${b}\r\n\r\n`), ok(10), Buffer.from('\r\n'), close(b)]), contentType: ct(b), stored: 1, carries: 10 },
      { name: 'part headers over 16 KiB', body: Buffer.concat([part(b, ok(11), `Content-Type: application/dicom\r\nX-Pad: ${'p'.repeat(20_000)}\r\n`), close(b)]), contentType: ct(b), stored: 0, status: 400 },
      { name: 'a text/plain part next to a DICOM part', body: Buffer.concat([part(b, Buffer.from('hello'), 'Content-Type: text/plain\r\n'), part(b, ok(12)), close(b)]), contentType: ct(b), stored: 1, status: 202, carries: 12 },
      { name: '2,000 empty parts', body: Buffer.concat([...Array.from({ length: 2000 }, () => part(b, Buffer.alloc(0))), close(b)]), contentType: ct(b), stored: 0, status: 409 },
      { name: 'no parts at all', body: close(b), contentType: ct(b), stored: 0, status: 400 },
    ];
    const problems: string[] = [];
    for (const f of framings) {
      const r = await stowRaw(server.baseUrl, f.body, f.contentType, { timeoutMs: DEADLINE_MS + 5000 });
      problems.push(...judge({ name: f.name, expect: f.stored ? 'any' : 'reject' }, r, f.carries !== undefined ? ok(f.carries) : undefined));
      if (f.status !== undefined && r.status !== f.status) problems.push(`${f.name}: status ${r.status}, expected ${f.status}`);
      if (f.stored && storedInstances(r.body).length !== f.stored) problems.push(`${f.name}: stored ${storedInstances(r.body).length}, expected ${f.stored}`);
    }
    expect(problems).toEqual([]);
    // Framing split at every byte: a delimiter across chunk edges is still found.
    const dripped = ok(13);
    const { body, contentType } = buildMultipart([dripped]);
    async function* drip(): AsyncGenerator<Buffer> {
      for (let i = 0; i < body.length; i += 7) {
        yield body.subarray(i, i + 7);
        if (i % 700 === 0) await sleep(1);
      }
    }
    const r = await stowRaw(server.baseUrl, drip(), contentType);
    expect(judge({ name: 'dripped 7 bytes at a time', expect: 'any' }, r, dripped)).toEqual([]);
    expect(r.status).toBe(200);
  });

  test('a 4 GB Content-Length with a short body, client gone: no hang, no leak, next request answered', async () => {
    const inst = buildInstance({ ...ids(), seed: 50 });
    const boundary = 'cl-boundary';
    const head = (length: number) =>
      Buffer.from(
        `POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n${authLine(server.port)}Content-Type: multipart/related; type="application/dicom"; boundary=${boundary}\r\n` +
          `Content-Length: ${length}\r\n\r\n--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`,
      );
    const short = inst.subarray(0, 900);
    // Settle, then count descriptors with no request in flight.
    await sleep(300);
    const fdsBefore = server.fdCount();
    for (let i = 0; i < 30; i++) {
      const x = await rawExchange(server.port, [head(4 * 1024 ** 3), short], { after: 'destroy', waitMs: 200 });
      expect(x.status).toBe(0); // the client left before any answer
    }
    // Half-closed instead: the server sees the body end early and must close its side promptly.
    for (let i = 0; i < 5; i++) {
      const x = await rawExchange(server.port, [head(4 * 1024 ** 3), short], { after: 'end', waitMs: DEADLINE_MS });
      // Closed by the server within the exchange's wait window: the short body did not hang it.
      expect(x.closedByServer).toBe(true);
      if (x.status !== 0) expect(x.status).toBeGreaterThanOrEqual(400);
      if (x.status !== 0) expect(x.status).toBeLessThan(500);
    }
    // One byte over the limit is refused before the body is read, and the connection closed.
    const over = await rawExchange(server.port, [head(4 * 1024 ** 3 + 1), short], { after: 'keep', waitMs: DEADLINE_MS });
    expect(over.status).toBe(413);
    expect(over.closedByServer).toBe(true);

    // The server answers the next request, and nothing of the aborted requests is left behind.
    expect((await getJson(`${server.baseUrl}/healthz`, 'application/json')).status).toBe(200);
    const r = await stow(server.baseUrl, [inst]);
    expect(judge({ name: 'after aborted uploads', expect: 'any' }, r, inst)).toEqual([]);
    expect(r.status).toBe(200);
    await sleep(500);
    expect(stagingLeftovers(env.config)).toEqual([]);
    expect(server.fdCount()).toBeLessThanOrEqual(fdsBefore + 8);
    // A client that leaves is not a server fault: nothing logged as an error or a 500.
    expect(server.errorLines()).toEqual([]);
  });

  test('UIDs with ../, slashes, NULs and over 64 characters are refused with 0xC000 and write nothing outside the store', async () => {
    const climb = `../../../../../../../../tmp/${escapeMarker}`;
    const hostile: Array<[string, Partial<Record<'studyInstanceUID' | 'seriesInstanceUID' | 'sopInstanceUID', string>>]> = [
      ['study ../ climbing to /tmp', { studyInstanceUID: climb }],
      ['series ..', { seriesInstanceUID: '..' }],
      ['sop with ../ inside', { sopInstanceUID: `1.2.3/../../../../${escapeMarker}` }],
      ['sop absolute path', { sopInstanceUID: `/tmp/${escapeMarker}` }],
      ['sop backslashes', { sopInstanceUID: `..\\..\\..\\${escapeMarker}` }],
      ['sop with a NUL', { sopInstanceUID: `1.2.3\u0000/../${escapeMarker}` }],
      ['sop percent-encoded', { sopInstanceUID: `%2e%2e%2f%2e%2e%2f${escapeMarker}` }],
      ['sop 65 characters', { sopInstanceUID: `1.${'2'.repeat(63)}` }],
      ['study 10,000 characters', { studyInstanceUID: `1.${'2'.repeat(9998)}` }],
      ['series 65,000 characters', { seriesInstanceUID: `1.${'3'.repeat(64_998)}` }],
    ];
    const cases: FuzzCase[] = hostile.map(([name, uids]) => ({
      name,
      bytes: buildInstance({ ...ids(), ...uids }),
      expect: 'reject',
      reason: 0xc000,
    }));
    expect(await sendAll(cases)).toEqual([]);

    // The same through the URL: a target study and retrieve paths that try to climb.
    const valid = buildInstance({ ...ids(), seed: 60 });
    const target = await stow(server.baseUrl, [valid], { path: `/dicomweb/studies/..%2F..%2F..%2Ftmp%2F${escapeMarker}` });
    expect(judge({ name: 'target study ../', expect: 'reject' }, target)).toEqual([]);
    for (const p of [
      `/dicomweb/studies/..%2F..%2F..%2Fetc/series/1.2/instances/1.2`,
      `/dicomweb/studies/1.2/series/1.2/instances/..%2F..%2F..%2F..%2Fetc%2Fpasswd`,
      `/dicomweb/studies/1.2/series/1.2/instances/${'9'.repeat(5000)}/metadata`,
    ]) {
      const r = await getJson(`${server.baseUrl}${p}`, 'multipart/related; type="application/dicom"; transfer-syntax=*');
      expect(r.status).toBeGreaterThanOrEqual(400);
      expect(r.status).toBeLessThan(500);
    }
    expect(fs.existsSync(path.join(os.tmpdir(), escapeMarker))).toBe(false);
    expect(fs.existsSync(path.join('/', escapeMarker))).toBe(false);
    expect(fs.readdirSync(os.tmpdir()).filter((n) => n.includes(escapeMarker))).toEqual([]);
  });

  test('a STOW refused before its body is read says Connection: close', async () => {
    const inst = buildInstance({ ...ids(), seed: 80 });
    const body = Buffer.concat([
      Buffer.from('--kb\r\nContent-Type: application/dicom\r\n\r\n'),
      inst,
      Buffer.from('\r\n--kbjunk\r\n'),
      Buffer.alloc(2048, 0x41),
      Buffer.from('\r\n--kb--\r\n'),
    ]);
    const post = (contentType: string) =>
      Buffer.concat([
        Buffer.from(`POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n${authLine(server.port)}Content-Type: ${contentType}\r\nContent-Length: ${body.length}\r\n\r\n`),
        body,
      ]);
    const malformed = await twoRequestsOneConnection(server.port, post('multipart/related; type="application/dicom"; boundary=kb'), '/healthz');
    expect(malformed.first).toBe(400);
    expect(malformed.firstConnection).toBe('close');
    const unsupported = await twoRequestsOneConnection(server.port, post('text/plain'), '/healthz');
    expect(unsupported.first).toBe(415);
    expect(unsupported.firstConnection).toBe('close');
  });

  // A DICOMweb error answer to a bodiless GET must not close a keep-alive connection under the client.
  test('a DICOMweb error answer to a GET keeps the connection usable, or says Connection: close', async () => {
    const r = await twoRequestsOneConnection(server.port, '/dicomweb/studies/1.2/series/1.2/instances/1.2/metadata', '/healthz');
    expect(r.first).toBe(404);
    expect(r.second === 200 || r.firstConnection === 'close').toBe(true);
  });

  test('afterwards: alive, bounded memory, a valid instance round-trips, everything acknowledged reads back, only blobs on disk', async () => {
    expect(server.alive()).toBe(true);
    const peak = rss.max();
    report('bad-input memory', { baselineKb, peakKb: peak, acknowledged: acknowledged.size });
    expect(peak - baselineKb).toBeLessThan(RSS_HEADROOM_KB);

    const inst = buildInstance({ ...ids(), seed: 77 });
    const r = await stow(server.baseUrl, [inst]);
    expect(r.status).toBe(200);
    const [stored] = storedInstances(r.body);
    const m = /\/studies\/([^/]+)\/series\/([^/]+)\/instances\/([^/]+)$/.exec(stored.retrieveUrl)!;
    const back = await retrieveInstance(server.baseUrl, { study: m[1], series: m[2], instance: m[3] });
    expect(back.status).toBe(200);
    expect(back.bytes?.equals(inst)).toBe(true);

    // Every acknowledged instance reads back as one of the byte sequences acknowledged under its
    // UID. A data set sent without File Meta comes back as a Part 10 file: meta, then its bytes.
    const problems: string[] = [];
    await runPool([...acknowledged], 4, async ([uid, a]) => {
      const got = await retrieveInstance(server.baseUrl, { study: a.study, series: a.series, instance: uid });
      if (got.status !== 200 || !got.bytes) {
        problems.push(`${uid}: retrieve answered ${got.status} ${got.error ?? ''}`);
        return;
      }
      const bytes = got.bytes;
      const matches = a.variants.some((v) =>
        isPart10(v) ? v.equals(bytes) : isPart10(bytes) && bytes.subarray(bytes.length - v.length).equals(v),
      );
      if (!matches) problems.push(`${uid}: retrieved ${bytes.length} bytes (${sha256(bytes)}) that were never acknowledged`);
    });
    expect(problems).toEqual([]);
    expect(acknowledged.size).toBeGreaterThan(20);

    // DATA_DIR: new files are content-addressed blobs only; staging is empty.
    const added = listFiles(env.dataDir, ['pg']).filter((f) => !filesBefore.includes(f));
    const blob = /^store\/blobs\/([0-9a-f]{2})\/([0-9a-f]{2})\/\1\2[0-9a-f]{60}$/;
    expect(added.filter((f) => !blob.test(f))).toEqual([]);
    expect(stagingLeftovers(env.config)).toEqual([]);
    if (env.s3) {
      const objects = listFiles(env.s3.directory);
      const object = new RegExp(`^${env.s3.bucket}/blobs/[0-9a-f]{64}\\._S3rver_(object|object\\.md5|metadata\\.json)$`);
      expect(objects.filter((o) => !object.test(o))).toEqual([]);
    }
    expect(server.errorLines()).toEqual([]);

    // A clean stop, then the index against the store: no dangling rows, exact aggregates.
    await server.stop();
    expect(server.exit()).toEqual({ code: 0, signal: null });
    rss.stop();
    const view = await openIndex(env.config);
    try {
      expect(await danglingRows(view)).toEqual([]);
      expect(await aggregateMismatches(view.knex)).toEqual([]);
      expect(await duplicateRows(view.knex)).toEqual([]);
    } finally {
      await view.close();
    }
  }, 120_000);
});
