/**
 * Who calls a service behind the access guard, as the guard decided it (res.locals.access): the
 * subject, its role, and the projects its rows are limited to ('all' for an admin). The privacy
 * and governance services take this rather than express objects.
 */
import type { Response } from 'express';
import { fhirError } from '../fhir/outcome';
import type { AccessLocals } from './access-guard';
import type { Role } from './roles';

/** The caller of a service. */
export interface Actor {
  subject: string;
  role: Role;
  projects: readonly string[] | 'all';
}

/** The caller of a request the guard let through; 401 (OperationOutcome) when none did. */
export function actorOf(res: Response): Actor {
  const access = res.locals.access as AccessLocals | undefined;
  if (!access) throw fhirError(401, 'login', 'authentication required');
  return { subject: access.principal.subject, role: access.principal.role, projects: access.decision.rowFilter.projects };
}
