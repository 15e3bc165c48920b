import { createSyntheticInstance, newUid } from '../../src/generate/synthetic-dicom';
import { ctSliceOptions, octVolumeOptions } from './instances';
import { buildMultipartBody, type PreparedRequest } from './stow-client';

/**
 * The data the Orthanc comparison sends to both servers: the same request bodies, built once,
 * with the UIDs kept so that the read figures can ask for what was stored.
 */

/** A series that was stored, and where. */
export interface StoredSeries {
  studyInstanceUID: string;
  seriesInstanceUID: string;
  patientID: string;
  instances: Array<{ sopInstanceUID: string; frames: number; bytes: number }>;
}

/** Request bodies plus what they contain. */
export interface PreparedBatch {
  requests: PreparedRequest[];
  series: StoredSeries[];
  /** For each of `series`, the indices of the requests that carry its instances. */
  seriesRequests: number[][];
}

/**
 * CT slices (128 x 128 x 16-bit, ~34 kB) in series of `seriesSize`, one study and patient per
 * series, framed `perRequest` to a STOW request (what bench/stow.ts phase a sends).
 */
export function prepareCtSeries(count: number, seriesSize: number, perRequest: number, tag: string): PreparedBatch {
  const bodies: Buffer[] = [];
  const series: StoredSeries[] = [];
  for (let i = 0; i < count; i++) {
    const n = i % seriesSize;
    if (n === 0) series.push({ studyInstanceUID: newUid(), seriesInstanceUID: newUid(), patientID: `CMP-${tag}-${Math.floor(i / seriesSize)}`, instances: [] });
    const s = series[series.length - 1]!;
    const r = createSyntheticInstance({ ...ctSliceOptions(i, n + 1, tag), studyInstanceUID: s.studyInstanceUID, seriesInstanceUID: s.seriesInstanceUID, patientID: s.patientID });
    s.instances.push({ sopInstanceUID: r.sopInstanceUID, frames: 1, bytes: r.bytes.length });
    bodies.push(r.bytes);
  }
  return framed(bodies, series, perRequest);
}

/**
 * The QIDO population: studies `from`..`to`-1 of 10 CT slices in 2 series of 5; four studies per
 * patient (PatientID `QP0000123`), as in a clinic where patients come back. `matrix` is the
 * slices' rows and columns (16-bit): a query reads neither server's files (Orthanc runs with
 * StorageAccessOnFind "Never"), so smaller pixels load a large index sooner without changing
 * what is measured.
 */
export function prepareQidoStudies(from: number, to: number, perRequest: number, tag: string, matrix = 128): PreparedBatch {
  const bodies: Buffer[] = [];
  const series: StoredSeries[] = [];
  for (let k = from; k < to; k++) {
    const study = newUid();
    const patientID = qidoPatientId(k);
    for (let se = 0; se < 2; se++) {
      const s: StoredSeries = { studyInstanceUID: study, seriesInstanceUID: newUid(), patientID, instances: [] };
      for (let n = 0; n < 5; n++) {
        const r = createSyntheticInstance({
          ...ctSliceOptions(k * 10 + se * 5 + n, n + 1, tag),
          studyInstanceUID: study,
          seriesInstanceUID: s.seriesInstanceUID,
          seriesNumber: se + 1,
          patientID,
          patientName: `Qido^${tag}^${Math.floor(k / 4)}`,
          accessionNumber: `Q${k}`,
          rows: matrix,
          columns: matrix,
        });
        s.instances.push({ sopInstanceUID: r.sopInstanceUID, frames: 1, bytes: r.bytes.length });
        bodies.push(r.bytes);
      }
      series.push(s);
    }
  }
  return framed(bodies, series, perRequest);
}

/** PatientID of QIDO study k (four studies per patient). */
export function qidoPatientId(k: number): string {
  return `QP${String(Math.floor(k / 4)).padStart(7, '0')}`;
}

/** OCT volumes (61 x 496 x 768 8-bit, ~23 MB), each its own study, one per request. */
export function prepareOctVolumes(count: number, tag: string): PreparedBatch {
  const series: StoredSeries[] = [];
  const requests: PreparedRequest[] = [];
  for (let i = 0; i < count; i++) {
    const o = { ...octVolumeOptions(i, tag), studyInstanceUID: newUid(), seriesInstanceUID: newUid() };
    const r = createSyntheticInstance(o);
    series.push({
      studyInstanceUID: r.studyInstanceUID,
      seriesInstanceUID: r.seriesInstanceUID,
      patientID: o.patientID ?? '',
      instances: [{ sopInstanceUID: r.sopInstanceUID, frames: o.numberOfFrames ?? 1, bytes: r.bytes.length }],
    });
    requests.push(buildMultipartBody([r.bytes]));
  }
  return { requests, series, seriesRequests: series.map((_, i) => [i]) };
}

/**
 * The series of `batch` that a server holds completely: those none of whose requests is in
 * `incomplete` (the requests it did not fully acknowledge, even when sent again).
 */
export function completeSeries(batch: PreparedBatch, incomplete: ReadonlySet<number>): StoredSeries[] {
  return batch.series.filter((_, i) => batch.seriesRequests[i]!.every((r) => !incomplete.has(r)));
}

/** Frames `bodies` (the instances of `series`, in order) `perRequest` to a request. */
function framed(bodies: Buffer[], series: StoredSeries[], perRequest: number): PreparedBatch {
  const requests: PreparedRequest[] = [];
  for (let i = 0; i < bodies.length; i += perRequest) requests.push(buildMultipartBody(bodies.slice(i, i + perRequest)));
  let first = 0;
  const seriesRequests = series.map((s) => {
    const end = first + s.instances.length;
    const out: number[] = [];
    for (let r = Math.floor(first / perRequest); r * perRequest < end; r++) out.push(r);
    first = end;
    return out;
  });
  return { requests, series, seriesRequests };
}
