import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import type { Resource } from '@medplum/fhirtypes';
import { loadFhirDefinitions } from './definitions';
import { collectValidationIssues } from './validation';

/**
 * Entry point of a validation worker thread (see validation-pool.ts): loads the definitions once,
 * then validates the resources it is sent and answers with their issues, on the MessagePort the
 * pool handed it (workerData.port), else on the parent port.
 */
const port: MessagePort | null = (workerData as { port?: MessagePort } | undefined)?.port ?? parentPort;
if (port) {
  const defs = loadFhirDefinitions();
  port.on('message', (message: { id: number; resources: Resource[] }) => {
    try {
      port.postMessage({ id: message.id, issues: message.resources.map((r) => collectValidationIssues(defs, r)) });
    } catch (err) {
      port.postMessage({ id: message.id, error: String((err as Error)?.message ?? err) });
    }
  });
  port.postMessage({ ready: true });
}
