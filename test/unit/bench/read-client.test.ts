import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { collectOwnGarbage, runReadSeries, watchGarbageCollection, type DicomwebEndpoint } from '../../../bench/lib/read-client';

describe('bench read client: what each timed request is charged with', () => {
  it('charges a window with the load generator’s own collection inside it, and no other window', async () => {
    const gcs = watchGarbageCollection();
    const before: [number, number] = [performance.now(), 0];
    before[1] = performance.now();
    await new Promise((r) => setTimeout(r, 5));
    const start = performance.now();
    collectOwnGarbage();
    const during: [number, number] = [start, performance.now()];
    await new Promise((r) => setTimeout(r, 5));
    const after: [number, number] = [performance.now(), performance.now() + 1];
    // PerformanceObserver entries arrive asynchronously.
    await new Promise((r) => setTimeout(r, 20));
    const [b, d, a] = gcs.overlaps([before, during, after]);
    expect(b).toBe(0);
    expect(d).toBeGreaterThan(0);
    expect(d).toBeLessThanOrEqual(during[1] - during[0] + 1e-6);
    expect(a).toBe(0);
  });

  it('gives every timed request its time to the answer head and its client collection time, warm-up excluded', async () => {
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/dicom+json' });
      res.end('[{}]');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const endpoint: DicomwebEndpoint = { name: 't', pid: process.pid, baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, root: '', headers: {} };
      const stats = await runReadSeries(endpoint, 4, 2, () => ({ path: '/studies', accept: 'application/dicom+json', keepBody: true, check: () => 1 }));
      expect(stats.ok).toBe(4);
      expect(stats.headMs).toHaveLength(4);
      expect(stats.clientGcMs).toHaveLength(4);
      stats.headMs!.forEach((h, i) => expect(h).toBeLessThanOrEqual(stats.latenciesMs[i]!));
      // The load generator collects its garbage between requests, outside the timed windows.
      expect(stats.clientGcMs!.every((ms) => ms === 0)).toBe(true);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
