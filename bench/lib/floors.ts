import { Readable } from 'node:stream';
import { streamSyntheticInstance } from '../../src/generate/synthetic-dicom';
import { measureBufferedUpload, measureStreamedUpload, withHttpSink } from './http-sink';
import { createCtSlices, createOctVolumes, largeInstanceOptions } from './instances';
import { measureDiskFloor, measureSha256, measureSmallFileFloor } from './machine-floor';
import { multipartEnvelope } from './stow-client';
import type { Floors, PhaseResult, StowOptions, StowSizes } from './stow-types';

/**
 * The machine floor for the selected phases: disk write + fsync and O_DIRECT read of each
 * phase's byte count, fsynced small files, one-core SHA-256, and loopback HTTP upload of the
 * same bodies to a discarding server.
 */
export async function measureFloors(options: StowOptions, sizes: StowSizes, dir: string, log: (s: string) => void): Promise<Floors> {
  log('measuring the machine floor');
  const floors: Floors = { sha256MBps: (await measureSha256(sizes.shaBytes)).MBps, disk: {}, http: {} };
  if (options.phases.has('a')) {
    const sliceBytes = createCtSlices(1, 1, 'probe')[0]!.length;
    floors.disk.a = await measureDiskFloor(dir, sliceBytes * sizes.small);
    floors.smallFiles = await measureSmallFileFloor(dir, sizes.smallFloorFiles, sliceBytes);
  }
  const volumeBytes = options.phases.has('b') ? createOctVolumes(1, 'probe')[0]!.length : 0;
  const large = largeInstanceOptions(sizes.largeBytes);
  const largeSize = streamedSize(large);
  if (options.phases.has('b')) floors.disk.b = await measureDiskFloor(dir, volumeBytes * sizes.volumes);
  if (options.phases.has('c')) floors.disk.c = await measureDiskFloor(dir, largeSize);
  if (options.phases.has('b') || options.phases.has('c')) {
    await withHttpSink(async (sink) => {
      if (options.phases.has('b')) floors.http.b = await measureBufferedUpload(sink, sizes.volumes, volumeBytes);
      if (options.phases.has('c')) {
        floors.http.c = await measureStreamedUpload(sink, streamedBody(large));
      }
    });
  }
  return floors;
}

/** The phase c body: multipart framing around a streamed synthetic instance. */
export function streamedBody(opts: ReturnType<typeof largeInstanceOptions>): { body: Readable; length: number; contentType: string; dicomBytes: number } {
  const instance = streamSyntheticInstance(opts, 1024 * 1024);
  const envelope = multipartEnvelope();
  async function* framed(): AsyncGenerator<Buffer> {
    yield envelope.head;
    for await (const chunk of instance.stream) yield chunk as Buffer;
    yield envelope.tail;
  }
  return {
    body: Readable.from(framed(), { objectMode: false }),
    length: envelope.head.length + instance.size + envelope.tail.length,
    contentType: envelope.contentType,
    dicomBytes: instance.size,
  };
}

function streamedSize(opts: ReturnType<typeof largeInstanceOptions>): number {
  const probe = streamSyntheticInstance(opts);
  probe.stream.destroy();
  return probe.size;
}

/** a: instances per second against fsynced small files per second (one writer). */
export function smallFloorRatio(p: PhaseResult, floors: Floors): PhaseResult['floor'] {
  if (!floors.smallFiles) return undefined;
  return { label: 'fsync-file', ratio: p.instances / p.seconds / floors.smallFiles.filesPerSecond };
}

/** b, c: MB/s against the slowest of disk write + fsync, one-core SHA-256 and loopback HTTP upload. */
export function bytesFloorRatio(p: PhaseResult, floors: Floors, group: 'b' | 'c'): PhaseResult['floor'] {
  const candidates: Array<[string, number | undefined]> = [
    ['disk write', floors.disk[group]?.writeMBps],
    ['SHA-256', floors.sha256MBps],
    ['HTTP upload', floors.http[group]],
  ];
  const known = candidates.filter((c): c is [string, number] => typeof c[1] === 'number' && c[1] > 0);
  if (known.length === 0) return undefined;
  const [label, rate] = known.reduce((a, b) => (b[1] < a[1] ? b : a));
  return { label, ratio: p.bytes / 1e6 / p.seconds / rate };
}
