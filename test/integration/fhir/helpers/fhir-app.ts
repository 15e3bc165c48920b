import express, { type Express } from 'express';
import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { createFhirRouter, type FhirRouterDeps } from '../../../../src/fhir/routes';
import { sharedData, startTestApp, type TestApp } from '../../../helpers/test-app';

/**
 * A real server for FHIR integration tests: the composed test app (fresh PostgreSQL database or
 * embedded engine) plus an express app with the FHIR router mounted at /fhir on its database.
 */
export interface FhirTestApp {
  t: TestApp;
  express: Express;
  close(): Promise<void>;
}

/** Starts the test app and mounts the FHIR router at /fhir. */
export async function startFhirTestApp(options: Partial<Omit<FhirRouterDeps, 'db' | 'logger'>> = {}): Promise<FhirTestApp> {
  const t = await startTestApp();
  const app = express();
  app.use('/fhir', createFhirRouter({ db: t.app.db, logger: pino({ level: 'silent' }), ...options }));
  return { t, express: app, close: () => t.close() };
}

/** Reads a JSON file from shared/data/fhir. */
export function fhirData<T = any>(...parts: string[]): T {
  return JSON.parse(fs.readFileSync(sharedData('fhir', ...parts), 'utf8')) as T;
}

/** Paths of the Synthea transaction bundles. */
export function syntheaBundles(): string[] {
  const dir = sharedData('fhir', 'synthea-r4');
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => path.join(dir, f));
}

/** A short random suffix for isolating test data. */
export const uniq = () => Math.random().toString(36).slice(2, 10);
