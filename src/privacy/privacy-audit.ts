/**
 * AuditEvents of the privacy workflow, shaped like the rest of the trail (IHE BALP 1.1) plus
 * what re-identification needs: subtype `reidentify` (ISO 21089 lifecycle, as the IHE
 * De-Identification handbook codes its audit subtypes), purposeOfEvent / agent.purposeOfUse
 * (v3 PurposeOfUse), and the patients as PatientKeys, never as MRNs.
 */
import type { Request, Response } from 'express';
import type { Knex } from 'knex';
import { auditInputFromRequest, type AuditLocals } from '../audit/audit-response';
import { buildAuditEvent, type AuditAction, type AuditEvent, type AuditSource, type Coding } from '../audit/audit-event';
import { writeAuditEvent } from '../audit/audit-store';

/** ISO 21089 record lifecycle events (FHIR terminology iso-21089-lifecycle). */
export const LIFECYCLE_SYSTEM = 'http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle';
/** HL7 v3 ActReason, the code system of the PurposeOfUse value set. */
export const PURPOSE_OF_USE_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
/** PatientKeys as identifiers in audit entities. */
export const PATIENT_KEY_SYSTEM = 'urn:imaging-lake:patient-key';

/** The facts of one step of the re-identification workflow. */
export interface ReidentificationAuditFacts {
  action: AuditAction;
  /** HTTP status the step answers with (decides the outcome). */
  status: number;
  /** The request id, once there is one. */
  requestId?: string;
  project?: string;
  /** The PatientKeys concerned (never an MRN). */
  patientKeys?: readonly string[];
  purposeOfUse?: string;
  /** The step: file, approve, refuse, resolve, read, search. */
  step: string;
  description?: string;
}

/** FHIR R4 AuditEvent elements the shared builder does not write. */
type PrivacyAuditEvent = AuditEvent & { purposeOfEvent?: Array<{ coding: Coding[] }> };
type PurposefulAgent = AuditEvent['agent'][number] & { purposeOfUse?: Array<{ coding: Coding[] }> };

/** Builds the AuditEvent of a re-identification step from the request and its facts. */
export function buildReidentificationEvent(req: Request, res: Response, source: AuditSource, facts: ReidentificationAuditFacts): AuditEvent {
  const details: Record<string, string> = { step: facts.step };
  if (facts.project) details.project = facts.project;
  const input = auditInputFromRequest(req, res, {
    protocol: 'fhir',
    action: facts.action,
    status: facts.status,
    resourceType: 'ReidentificationRequest',
    resourceId: facts.requestId,
    outcomeDescription: facts.description,
    details,
  });
  const event = buildAuditEvent(input, source) as PrivacyAuditEvent;
  event.subtype = [{ system: LIFECYCLE_SYSTEM, code: 'reidentify', display: 'Re-identify Record Lifecycle Event' }, ...(event.subtype ?? [])];
  if (facts.purposeOfUse) {
    const purpose = [{ coding: [{ system: PURPOSE_OF_USE_SYSTEM, code: facts.purposeOfUse }] }];
    event.purposeOfEvent = purpose;
    const requestor = event.agent.find((a) => a.requestor) as PurposefulAgent | undefined;
    if (requestor) requestor.purposeOfUse = purpose;
  }
  for (const key of facts.patientKeys ?? []) {
    (event.entity ??= []).push({
      what: { identifier: { system: PATIENT_KEY_SYSTEM, value: key } },
      type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '1', display: 'Person' },
      role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1', display: 'Patient' },
    });
  }
  return event;
}

/** Writes a step's AuditEvent (in the step's transaction when given; call markWritten once it committed). */
export async function writeReidentificationEvent(db: Knex | Knex.Transaction, req: Request, res: Response, source: AuditSource, facts: ReidentificationAuditFacts): Promise<void> {
  await writeAuditEvent(db, buildReidentificationEvent(req, res, source, facts));
}

/** Marks the request's audit as written and committed (the gate adds no second event). */
export function markWritten(res: Response): void {
  const locals = (res.locals.audit ?? {}) as AuditLocals;
  res.locals.audit = { ...locals, written: true };
}
