import { FIRST_STUDY_DATE, OCT_EVERY, patientIdOfStudy, patientNumber, STUDY_DATE_DAYS, studyKind, surnameOf } from './index-population';
import { ACCEPT, jsonArrayItems, seededRandom, type ReadOutcome, type ReadRequest } from './read-client';
import { KIND_SHAPE, OCT_FRAME_BYTES, type RealStudy, type StudyKind } from './real-studies';

/**
 * The requests of the QIDO/WADO benchmark: each case builds its i-th request from a seeded
 * random choice among the studies that exist at the scale being measured, and checks the
 * answer (status 200, and the number of results the population says there must be).
 */

export type CaseGroup = 'search' | 'metadata' | 'frame' | 'retrieve';

/** One measured figure. */
export interface ReadCase {
  id: string;
  title: string;
  group: CaseGroup;
  /** Latency cases: p95 must be below this; retrieve cases: MB/s at least this. */
  target?: { kind: 'p95-ms' | 'min-MBps'; value: number };
  /** Retrieve cases send this many requests whatever --requests says. */
  fixedCount?: number;
  make(i: number): ReadRequest;
}

/** Project targets for this benchmark (bench/README.md). */
export const READ_TARGETS = { searchP95Ms: 15, metadataP95Ms: 30, frameP95Ms: 10, retrieveMBps: 300 };

/** What the cases need to know about the index at this scale. */
export interface CaseContext {
  /** Generated studies 0..studies-1 exist. */
  studies: number;
  studyUid(k: number): string;
  seriesUid(k: number, slot: number): string;
  real: Record<StudyKind, RealStudy>;
  /** Study retrieves per retrieve case. */
  retrieves: number;
}

const DAY_MS = 86_400_000;

function dicomDate(daysAfterFirst: number): string {
  const d = new Date(Date.parse(`${FIRST_STUDY_DATE}T00:00:00Z`) + daysAfterFirst * DAY_MS);
  return d.toISOString().slice(0, 10).replace(/-/g, '');
}

const at = (min: number) => (o: ReadOutcome) => jsonArrayItems(o, { min });
const exactly = (n: number) => (o: ReadOutcome) => jsonArrayItems(o, { exactly: n });

/** The cases, rooted at imaging-lake's `/dicomweb`. Every case has its own seed, so runs compare. */
export function buildReadCases(ctx: CaseContext, root = '/dicomweb'): ReadCase[] {
  const S = ctx.studies;
  const rng = (seed: number) => seededRandom(seed * 7_777 + S);
  const anyStudy = (r: () => number) => Math.floor(r() * S);
  const ctStudies = Math.ceil(S / 10);
  const octStudies = Math.floor((S - 2) / OCT_EVERY) + 1;
  const search = { kind: 'p95-ms' as const, value: READ_TARGETS.searchP95Ms };
  const metadata = { kind: 'p95-ms' as const, value: READ_TARGETS.metadataP95Ms };

  const r1 = rng(1);
  const r2 = rng(2);
  const r3 = rng(3);
  const r3b = rng(33);
  const r4 = rng(4);
  const r5 = rng(5);
  const r6 = rng(6);
  const r7 = rng(7);
  const volumes = ctx.real.oct.series.filter((s) => s.modality === 'OPT');
  const dateRange = (r: () => number) => {
    const start = Math.floor(r() * (STUDY_DATE_DAYS - 30));
    return `${dicomDate(start)}-${dicomDate(start + 29)}`;
  };
  const cases: ReadCase[] = [
    {
      id: 'qido-patient-id',
      title: '/studies?PatientID={random patient}',
      group: 'search',
      target: search,
      make: () => ({ path: `${root}/studies?PatientID=${patientIdOfStudy(anyStudy(r1))}`, accept: ACCEPT.json, keepBody: true, check: at(1) }),
    },
    {
      id: 'qido-study-date',
      title: '/studies?StudyDate={30-day range} (every match: server page of 1,000)',
      group: 'search',
      target: search,
      make: () => ({ path: `${root}/studies?StudyDate=${dateRange(r2)}`, accept: ACCEPT.json, keepBody: true, check: at(0) }),
    },
    {
      id: 'qido-study-date-100',
      title: '/studies?StudyDate={30-day range}&limit=100 (first page, as a study list asks)',
      group: 'search',
      target: search,
      make: () => ({ path: `${root}/studies?StudyDate=${dateRange(r3b)}&limit=100`, accept: ACCEPT.json, keepBody: true, check: at(0) }),
    },
    {
      id: 'qido-name-fuzzy',
      title: '/studies?PatientName={3-letter prefix}&fuzzymatching=true',
      group: 'search',
      target: search,
      make: () => {
        const prefix = surnameOf(patientNumber(anyStudy(r3))).slice(0, 3);
        return { path: `${root}/studies?PatientName=${prefix}&fuzzymatching=true`, accept: ACCEPT.json, keepBody: true, check: at(1) };
      },
    },
    {
      id: 'qido-study-series',
      title: '/studies/{random study}/series',
      group: 'search',
      target: search,
      make: () => {
        const k = anyStudy(r4);
        return { path: `${root}/studies/${ctx.studyUid(k)}/series`, accept: ACCEPT.json, keepBody: true, check: exactly(KIND_SHAPE[studyKind(k)].series) };
      },
    },
    {
      id: 'metadata-ct-series',
      title: '/studies/{s}/series/{se}/metadata, CT series of 64 instances',
      group: 'metadata',
      target: metadata,
      make: () => {
        const k = Math.floor(r5() * ctStudies) * 10;
        return { path: `${root}/studies/${ctx.studyUid(k)}/series/${ctx.seriesUid(k, 0)}/metadata`, accept: ACCEPT.json, keepBody: true, check: exactly(64) };
      },
    },
    {
      id: 'metadata-opt-series',
      title: '/studies/{s}/series/{se}/metadata, OPT volume series (1 instance, 61 per-frame items)',
      group: 'metadata',
      target: metadata,
      make: () => {
        const k = Math.floor(r6() * octStudies) * OCT_EVERY + 1;
        return { path: `${root}/studies/${ctx.studyUid(k)}/series/${ctx.seriesUid(k, 0)}/metadata`, accept: ACCEPT.json, keepBody: true, check: exactly(1) };
      },
    },
    {
      id: 'frame-opt',
      title: 'single frame of a 61-frame 496 x 768 OPT volume (random volume and frame)',
      group: 'frame',
      target: { kind: 'p95-ms', value: READ_TARGETS.frameP95Ms },
      make: () => {
        const v = volumes[Math.floor(r7() * volumes.length)]!;
        const frame = 1 + Math.floor(r7() * v.instances[0]!.frames);
        return {
          path: `${root}/studies/${ctx.real.oct.studyInstanceUID}/series/${v.seriesInstanceUID}/instances/${v.instances[0]!.sopInstanceUID}/frames/${frame}`,
          accept: ACCEPT.frames,
          check: (o) => (o.bytes >= OCT_FRAME_BYTES ? 1 : `frame answer has ${o.bytes} bytes, fewer than the ${OCT_FRAME_BYTES} of the frame`),
        };
      },
    },
  ];
  for (const kind of ['oct', 'ct'] as const) {
    const study = ctx.real[kind];
    const instances = study.series.reduce((n, s) => n + s.instances.length, 0);
    cases.push({
      id: `retrieve-${kind}`,
      title: `study retrieve, ${kind === 'oct' ? 'OCT visit' : 'CT study'} (${instances} instances, ${(study.bytes / 1e6).toFixed(1)} MB), filesystem store`,
      group: 'retrieve',
      target: kind === 'oct' ? { kind: 'min-MBps', value: READ_TARGETS.retrieveMBps } : undefined,
      fixedCount: ctx.retrieves,
      make: () => ({
        path: `${root}/studies/${study.studyInstanceUID}`,
        accept: ACCEPT.instances,
        check: (o) => (o.bytes >= study.bytes ? instances : `retrieve answer has ${o.bytes} bytes, fewer than the ${study.bytes} stored`),
      }),
    });
  }
  return cases;
}
