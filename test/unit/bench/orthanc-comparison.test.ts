import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { completeSeries, type PreparedBatch, type StoredSeries } from '../../../bench/lib/compare-data';
import { markUnmeasured, measureStow, newFigure, type ComparedServer, type Figure } from '../../../bench/lib/compare-figures';
import { imagingLakeFailed, renderComparison, resultCell, targetPasses } from '../../../bench/lib/compare-report';
import { chooseReadSet, COMPARE_FULL, IL, loadOutOfReach, ORTHANC, type CompareVariant } from '../../../bench/lib/compare-variant';
import { buildMultipartBody } from '../../../bench/lib/stow-client';

// The Orthanc comparison (bench/orthanc.ts) must always complete: a peer's failures are shown in
// its own column, and never fail imaging-lake's targets or stop the run.

function sample(value: number, failures = 0): Figure['samples'][string][number] {
  return {
    value,
    units: 1,
    m: {
      stats: { requests: 1, ok: 1 - failures, failures, failureSamples: [], referenced: 1, latenciesMs: [value] },
      seconds: 1,
      serverCpuSeconds: 0.001,
      serverSystemCpuSeconds: 0,
      clientCpuSeconds: 0,
      machineBusy: 0.5,
      peakRssBytes: 1e8,
      startRssBytes: 1e8,
    },
  };
}

function qidoP95(): Figure {
  const f = newFigure({ id: 'qido-p95-10000', title: 'QIDO /studies?PatientID= p95 at 10,000 instances', unit: 'ms', better: 'lower', phase: 'qido', cpuPer: 'req' });
  f.target = { text: '>= 5x Orthanc', pass: (a, b) => b / a >= 5 };
  f.samples[IL] = [sample(5)];
  return f;
}

describe('Orthanc comparison: a peer that cannot be measured', () => {
  it('leaves a peer-relative target unjudged and names the reason, without failing imaging-lake', () => {
    const f = qidoP95();
    markUnmeasured(f, ORTHANC, 'stored none of the 250 patients completely');
    expect(targetPasses(f)).toBeUndefined();
    expect(imagingLakeFailed(f)).toBe(false);
    expect(resultCell(f)).toBe('not judged; Orthanc not measured: stored none of the 250 patients completely');
  });

  it('fails the target when imaging-lake itself could not be measured', () => {
    const f = qidoP95();
    f.samples = {};
    markUnmeasured(f, IL, 'stored none of the 250 patients completely');
    f.samples[ORTHANC] = [sample(40)];
    expect(targetPasses(f)).toBe(false);
    expect(imagingLakeFailed(f)).toBe(true);
  });

  it('still judges a floor target (which needs no peer value) when the peer was not measured', () => {
    const f = newFigure({ id: 'stow-opt', title: 'STOW-RS OPT volumes', unit: 'MB/s', better: 'higher', phase: 'stow volumes', cpuPer: 'MB' });
    f.target = { text: '>= 200 MB/s', pass: (a) => a >= 200 };
    f.samples[IL] = [sample(250)];
    markUnmeasured(f, ORTHANC, 'server exited');
    expect(targetPasses(f)).toBe(true);
  });

  it('counts a peer failed request in its column only', () => {
    const f = qidoP95();
    f.samples[ORTHANC] = [sample(50, 1)];
    expect(targetPasses(f)).toBe(true);
    expect(imagingLakeFailed(f)).toBe(false);
    expect(resultCell(f)).toBe('PASS; Orthanc: 1 failed requests');
  });
});

describe('Orthanc comparison: what the read figures ask for', () => {
  const patients = ['QP0000000', 'QP0000001', 'QP0000002'];

  it('asks both servers for the patients both stored when the peer lost some', () => {
    const set = chooseReadSet(patients, new Map([[IL, new Set<string>()], [ORTHANC, new Set(['QP0000001'])]]), 'patients');
    expect(set.items.get(IL)).toEqual(['QP0000000', 'QP0000002']);
    expect(set.items.get(ORTHANC)).toEqual(['QP0000000', 'QP0000002']);
    expect(set.unmeasured).toEqual({});
    expect(set.note).toContain('Orthanc lacks 1');
  });

  it('does not measure a server that stored none of them, and measures the other on its own', () => {
    const set = chooseReadSet(patients, new Map([[IL, new Set<string>()], [ORTHANC, new Set(patients)]]), 'patients');
    expect(set.items.get(IL)).toEqual(patients);
    expect(set.items.has(ORTHANC)).toBe(false);
    expect(set.unmeasured[ORTHANC]).toBe('stored none of the 3 patients completely');
  });

  it('counts a series as stored only when every request carrying it was acknowledged', () => {
    const series = (n: number): StoredSeries => ({ studyInstanceUID: `1.${n}`, seriesInstanceUID: `2.${n}`, patientID: `P${n}`, instances: [] });
    const batch: PreparedBatch = { requests: [], series: [series(0), series(1)], seriesRequests: [[0, 1], [1, 2]] };
    expect(completeSeries(batch, new Set([2]))).toEqual([batch.series[0]]);
    expect(completeSeries(batch, new Set([1]))).toEqual([]);
  });
});

describe('Orthanc comparison: the QIDO growth curve', () => {
  it('runs to 1,000,000 instances in a full run', () => {
    expect(COMPARE_FULL.qidoScales).toEqual([10_000, 100_000, 1_000_000]);
  });

  it('says a scale is out of reach when loading it at the measured rates would outlast the budget', () => {
    const load = newFigure({ id: 'load', title: 'bulk load', unit: 'inst/s', better: 'higher', phase: 'load', cpuPer: 'inst' });
    load.samples[IL] = [sample(466)];
    load.samples[ORTHANC] = [sample(138)];
    const servers = [{ name: IL }, { name: ORTHANC }];
    expect(loadOutOfReach(load, servers, 90_000, 1500, 1500)).toBeUndefined();
    // Within three times what is left: loaded as far as the budget allows, measured at the count reached.
    expect(loadOutOfReach(load, servers, 90_000, 600, 1500)).toBeUndefined();
    const why = loadOutOfReach(load, servers, 900_000, 1500, 1500);
    expect(why).toMatch(/^storing 900,000 more instances in both servers through STOW-RS would take at least 2\.3 h/);
    expect(why).toContain('Orthanc 138 inst/s');
  });

  it('projects a growth both servers take at once by the slower server, once its rates are known', () => {
    const load = newFigure({ id: 'load', title: 'bulk load', unit: 'inst/s', better: 'higher', phase: 'load', cpuPer: 'inst' });
    load.samples[IL] = [sample(400)];
    load.samples[ORTHANC] = [sample(400)];
    const growth = newFigure({ id: 'growth', title: 'growth', unit: 'inst/s', better: 'higher', phase: 'load', cpuPer: 'inst' });
    const servers = [{ name: IL }, { name: ORTHANC }];
    // No growth measured yet: one server after the other, 900,000 / 400 twice = 75 min.
    expect(loadOutOfReach(load, servers, 900_000, 1200, 1200, growth)).toMatch(/would take at least 75 min at this run's bulk-load rates/);
    growth.samples[IL] = [sample(300)];
    growth.samples[ORTHANC] = [sample(150)];
    // Together: the slower server's 900,000 / 150 = 100 min (1.7 h), within three times 40 min.
    expect(loadOutOfReach(load, servers, 900_000, 2400, 2400, growth)).toBeUndefined();
    const why = loadOutOfReach(load, servers, 900_000, 1800, 1800, growth);
    expect(why).toMatch(/would take at least 1\.7 h at this run's growth rates \(imaging-lake 300 inst\/s, Orthanc 150 inst\/s\)/);
  });

  it('prints the whole table with the unreached scale marked as not measured', () => {
    const f = qidoP95();
    f.samples[ORTHANC] = [sample(40)];
    const skipped = { ...newFigure({ id: 'qido-p50-1000000', title: 'QIDO /studies?PatientID= p50 at 1,000,000 instances', unit: 'ms', better: 'lower', phase: 'qido', cpuPer: 'req' }), skipped: 'too long; see qido-wado' } as Figure;
    const v: CompareVariant = { db: 'postgres', labels: { [IL]: IL, [ORTHANC]: ORTHANC }, figures: [f, skipped], startup: {}, qido: [], seconds: 120 };
    const floors = { diskWriteMBps: 500, diskReadMBps: 900, sha256MBps: 1000, smallFilesPerSecond: 300 };
    const text = renderComparison(v, { quick: false, command: 'npx tsx bench/orthanc.ts', stamp: 'now', workRoot: os.tmpdir(), loadAtStart: [0, 0, 0], sizes: COMPARE_FULL, floors });
    expect(text).toContain('| QIDO /studies?PatientID= p50 at 1,000,000 instances | not measured | not measured |');
    expect(text).toContain('- QIDO /studies?PatientID= at 1,000,000 instances: not measured: too long; see qido-wado.');
    expect(text).toContain('Targets: 1 of 1 pass.');
    expect(text).toContain('Run length: 2 min');
  });
});

describe('Orthanc comparison: population requests a peer drops', () => {
  let server: http.Server;
  let baseUrl: string;
  /** Answers the first `drop` STOWs with 200 and no instance referenced (as Orthanc's PostgreSQL index did under concurrent writers), then references all. */
  let drop = 0;

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const parts = Buffer.concat(chunks).toString('latin1').split('Content-Type: application/dicom').length - 1;
        const referenced = drop-- > 0 ? [] : Array.from({ length: parts }, () => ({}));
        res.writeHead(200, { 'Content-Type': 'application/dicom+json' });
        res.end(JSON.stringify({ '00081199': { vr: 'SQ', Value: referenced } }));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  const peer = (): ComparedServer => ({ name: ORTHANC, pid: process.pid, baseUrl, root: '/dicom-web', headers: {}, tally: { sent: 0, acknowledged: 0 } });
  const requests = [buildMultipartBody([Buffer.from('a'), Buffer.from('b')]), buildMultipartBody([Buffer.from('c')])];

  it('sends a dropped request again off the clock and reports it complete once acknowledged', async () => {
    drop = 1;
    const s = peer();
    const load = newFigure({ id: 'load', title: 'bulk load', unit: 'inst/s', better: 'higher', phase: 'load', cpuPer: 'inst' });
    const incomplete = await measureStow([s], 0, requests, 1, load, 'inst', true);
    expect([...incomplete.get(ORTHANC)!]).toEqual([]);
    expect(s.tally).toEqual({ sent: 3, acknowledged: 1, resent: 1, repaired: 1 });
    expect(load.samples[ORTHANC]![0]!.m.stats.failures).toBe(1);
  });

  it('reports the requests still dropped after every resend, so the reads leave them out', async () => {
    drop = 100;
    const s = peer();
    const load = newFigure({ id: 'load', title: 'bulk load', unit: 'inst/s', better: 'higher', phase: 'load', cpuPer: 'inst' });
    const incomplete = await measureStow([s], 0, requests, 1, load, 'inst', true);
    expect([...incomplete.get(ORTHANC)!].sort()).toEqual([0, 1]);
    expect(s.tally.repaired).toBe(0);
  }, 30_000);
});
