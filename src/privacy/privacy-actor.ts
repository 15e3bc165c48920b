/**
 * Who calls a privacy service (src/auth/actor.ts), and the project checks every privacy service
 * makes of it.
 */
import type { Actor } from '../auth/actor';
import { fhirError } from '../fhir/outcome';

/** The caller of a privacy service. */
export type PrivacyActor = Actor;

/** True when the actor's rows include `project`. */
export function actorHolds(actor: PrivacyActor, project: string): boolean {
  return actor.projects === 'all' || actor.projects.includes(project);
}

/** 403 (OperationOutcome forbidden) unless the actor's rows include `project`. */
export function assertActorHolds(actor: PrivacyActor, project: string): void {
  if (!actorHolds(actor, project)) throw fhirError(403, 'forbidden', `access denied: not a member of project ${project}`);
}

const PROJECT_ID_RE = /^[\w.-]{1,64}$/;

/** 400 unless `value` is a project id (1-64 of letters, digits and ._-). */
export function parseProjectId(value: unknown, name = 'project'): string {
  if (typeof value !== 'string' || !PROJECT_ID_RE.test(value)) throw fhirError(400, 'invalid', `${name}: a project id (1-64 of letters, digits and ._-) is required`);
  return value;
}
