import fs from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { buildTransactionBundle } from './fhir-bundles';
import { MODALITIES, planPopulation, type Modality, type PlannedPatient, type PlannedStudy } from './population';
import { buildInstance, planStudyInstances, type PixelPreset } from './study-instances';

/**
 * `imaging-lake generate`: a synthetic research population written as files (DICOM Part 10 and
 * FHIR transaction Bundles) and/or sent to a running server (FHIR first, so each Patient exists
 * with its demographics before its studies arrive; then one STOW-RS request per visit).
 * Memory stays bounded by the visits in flight, whatever the population size.
 */
export interface GenerateOptions {
  patients: number;
  studiesPerPatient: number;
  modalities: Modality[];
  pixels: PixelPreset;
  seed: number;
  from: string;
  to: string;
  /** Write files under this directory. */
  out?: string;
  /** Send to the server at this base URL (the one that serves /dicomweb and /fhir). */
  url?: string;
  /** Bearer token for `url`. */
  token?: string;
  concurrency: number;
  dicom: boolean;
  fhir: boolean;
  /** Patients per transaction Bundle. */
  bundleSize: number;
}

export interface GenerateSummary {
  patients: number;
  conditions: number;
  studies: number;
  series: number;
  instances: number;
  bytes: number;
  bundles: number;
  byModality: Record<string, { studies: number; instances: number }>;
  out?: string;
  url?: string;
}

export class GenerateError extends Error {}

const DATE = /^\d{8}$/;

/** Checks option values the command line gave; throws GenerateError with a plain message. */
export function checkGenerateOptions(o: GenerateOptions): void {
  const whole = (name: string, v: number, min: number) => {
    if (!Number.isInteger(v) || v < min) throw new GenerateError(`${name} must be an integer of at least ${min}`);
  };
  whole('--patients', o.patients, 1);
  whole('--studies', o.studiesPerPatient, 1);
  whole('--concurrency', o.concurrency, 1);
  whole('--bundle-size', o.bundleSize, 1);
  whole('--seed', o.seed, 0);
  if (!o.out && !o.url) throw new GenerateError('give --out DIR (write files), --url BASE (send to a server), or both');
  if (!o.dicom && !o.fhir) throw new GenerateError('--no-dicom and --no-fhir together leave nothing to generate');
  if (o.modalities.length === 0 || o.modalities.some((m) => !MODALITIES.includes(m))) throw new GenerateError(`--modalities takes a comma list of ${MODALITIES.join(', ')}`);
  if (o.pixels !== 'small' && o.pixels !== 'full') throw new GenerateError('--pixels must be small or full');
  if (!DATE.test(o.from) || !DATE.test(o.to) || o.from > o.to || Number.isNaN(Date.parse(`${o.from.slice(0, 4)}-${o.from.slice(4, 6)}-${o.from.slice(6)}`))) {
    throw new GenerateError('--dates takes a range YYYYMMDD-YYYYMMDD, start not after end');
  }
  if (o.url) {
    try {
      const u = new URL(o.url);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error();
    } catch {
      throw new GenerateError(`--url must be an http(s) URL, not ${o.url}`);
    }
  }
}

export async function runGenerate(o: GenerateOptions, log: (line: string) => void = () => undefined): Promise<GenerateSummary> {
  checkGenerateOptions(o);
  const base = o.url?.replace(/\/+$/, '');
  const summary: GenerateSummary = { patients: 0, conditions: 0, studies: 0, series: 0, instances: 0, bytes: 0, bundles: 0, byModality: {}, out: o.out, url: base };
  const population = () => planPopulation({ patients: o.patients, studiesPerPatient: o.studiesPerPatient, modalities: o.modalities, seed: o.seed, from: o.from, to: o.to });
  if (o.out) await fs.mkdir(o.out, { recursive: true });

  if (o.fhir) {
    let batch: PlannedPatient[] = [];
    const flush = async () => {
      if (!batch.length) return;
      summary.bundles++;
      const bundle = buildTransactionBundle(batch);
      batch = [];
      const text = JSON.stringify(bundle);
      if (o.out) await writeFile(path.join(o.out, 'fhir', `bundle-${String(summary.bundles).padStart(6, '0')}.json`), text);
      if (base) await postBundle(base, o.token, text);
    };
    for (const patient of population()) {
      summary.conditions += patient.conditions.length;
      batch.push(patient);
      if (batch.length >= o.bundleSize) await flush();
    }
    await flush();
    log(`FHIR: ${summary.bundles} transaction Bundles, ${summary.conditions} Conditions`);
  }

  const pool = new Pool(o.concurrency);
  for (const patient of population()) {
    summary.patients++;
    if (!o.dicom) continue;
    for (const study of patient.studies) {
      const planned = planStudyInstances(patient, study, o.pixels);
      const counts = (summary.byModality[study.modality] ??= { studies: 0, instances: 0 });
      counts.studies++;
      counts.instances += planned.length;
      summary.studies++;
      summary.series += new Set(planned.map((p) => p.seriesNumber)).size;
      summary.instances += planned.length;
      await pool.run(async () => {
        const parts = planned.map((p) => ({ planned: p, bytes: buildInstance(p) }));
        summary.bytes += parts.reduce((sum, p) => sum + p.bytes.length, 0);
        if (o.out) {
          const dir = path.join(o.out, 'dicom', patient.mrn, `${study.date}_${study.modality}_${study.accession}`);
          for (const part of parts) await writeFile(path.join(dir, `${part.planned.seriesNumber}_${String(part.planned.instanceNumber).padStart(4, '0')}.dcm`), part.bytes);
        }
        if (base) await stowStudy(base, o.token, study, parts.map((p) => p.bytes));
      });
    }
    if (summary.patients % 1000 === 0) log(`DICOM: ${summary.patients} patients, ${summary.instances} instances`);
  }
  await pool.drain();
  if (o.dicom) log(`DICOM: ${summary.studies} studies, ${summary.series} series, ${summary.instances} instances, ${(summary.bytes / 1e6).toFixed(1)} MB`);
  if (o.out) await writeFile(path.join(o.out, 'summary.json'), `${JSON.stringify({ options: { ...o, token: undefined }, ...summary }, null, 2)}\n`);
  return summary;
}

async function writeFile(file: string, data: string | Buffer): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, data);
}

function authorization(token: string | undefined): Record<string, string> {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** fetch, with a failure to connect reported as a GenerateError naming the server. */
async function send(url: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (err) {
    const cause = (err as { cause?: { message?: string } }).cause?.message ?? (err as Error).message;
    throw new GenerateError(`cannot reach ${url}: ${cause}`);
  }
}

async function postBundle(base: string, token: string | undefined, body: string): Promise<void> {
  const res = await send(`${base}/fhir`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/fhir+json', Accept: 'application/fhir+json', Prefer: 'return=minimal', ...authorization(token) },
    body,
  });
  const text = await res.text();
  if (res.status !== 200) throw new GenerateError(`POST ${base}/fhir answered ${res.status}: ${text.slice(0, 500)}`);
}

/** One STOW-RS request with every instance of the visit. */
async function stowStudy(base: string, token: string | undefined, study: PlannedStudy, instances: Buffer[]): Promise<void> {
  const boundary = `imaging-lake-generate-${randomBytes(12).toString('hex')}`;
  const chunks: Buffer[] = [];
  for (const bytes of instances) chunks.push(Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`), bytes, Buffer.from('\r\n'));
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  const res = await send(`${base}/dicomweb/studies`, {
    method: 'POST',
    headers: { 'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}`, Accept: 'application/dicom+json', ...authorization(token) },
    body: Buffer.concat(chunks),
  });
  const text = await res.text();
  if (res.status !== 200) throw new GenerateError(`STOW-RS of study ${study.uid} answered ${res.status}: ${text.slice(0, 500)}`);
}

/** Runs at most `size` tasks at once; the first failure is thrown by the next run or drain. */
class Pool {
  private readonly running = new Set<Promise<void>>();
  private failure: unknown;

  constructor(private readonly size: number) {}

  async run(task: () => Promise<void>): Promise<void> {
    while (this.running.size >= this.size) await Promise.race(this.running);
    this.throwIfFailed();
    const p: Promise<void> = task()
      .catch((err: unknown) => {
        this.failure ??= err;
      })
      .finally(() => this.running.delete(p));
    this.running.add(p);
  }

  async drain(): Promise<void> {
    await Promise.all(this.running);
    this.throwIfFailed();
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }
}
