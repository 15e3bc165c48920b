/**
 * Builds FHIR R4 AuditEvent resources shaped after IHE BALP (Basic Audit Log Patterns 1.1):
 * RESTful interactions (type `rest`, subtype from restful-interaction), DICOMweb transfers and
 * queries (DICOM 110104 / 110112 / 110105), and user authentication (110114). Pure code.
 */
import { randomUUID } from 'node:crypto';

/** A FHIR Coding. */
export interface Coding {
  system?: string;
  code: string;
  display?: string;
}

/** The subset of FHIR R4 AuditEvent this server writes. */
export interface AuditEvent {
  resourceType: 'AuditEvent';
  id: string;
  meta?: { profile?: string[] };
  type: Coding;
  subtype?: Coding[];
  action?: 'C' | 'R' | 'U' | 'D' | 'E';
  recorded: string;
  outcome: '0' | '4' | '8' | '12';
  outcomeDesc?: string;
  agent: Array<{
    type?: { coding: Coding[] };
    role?: Array<{ coding: Coding[] }>;
    who?: { reference?: string; identifier?: { system?: string; value: string }; display?: string };
    requestor: boolean;
    policy?: string[];
    network?: { address: string; type: '1' | '2' | '5' };
  }>;
  source: { site?: string; observer: { display: string }; type?: Coding[] };
  entity?: Array<{
    what?: { reference?: string; identifier?: { system?: string; type?: { coding: Coding[] }; value: string } };
    type?: Coding;
    role?: Coding;
    query?: string;
    description?: string;
    detail?: Array<{ type: string; valueString: string }>;
  }>;
}

/** What kind of access is being recorded. */
export type AuditAction =
  | 'read'
  | 'vread'
  | 'search'
  | 'history'
  | 'create'
  | 'update'
  | 'patch'
  | 'delete'
  | 'operation'
  | 'login';

/** Who acted (usually from the request's principal). */
export interface AuditAgent {
  subject?: string;
  issuer?: string;
  clientId?: string;
  role?: string;
  displayName?: string;
  /** Token id (jti): BALP records it as the user agent's policy. */
  tokenId?: string;
  /** Network address of the caller. */
  address?: string;
}

/** The facts of one access, protocol-neutral. */
export interface AuditInput {
  /** `dimse`: a DICOM network service (a C-STORE received by src/dimse), recorded as DICOMweb's equivalent. */
  protocol: 'fhir' | 'dicomweb' | 'dimse' | 'auth';
  action: AuditAction;
  resourceType?: string;
  resourceId?: string;
  /** DICOM Study Instance UIDs touched. */
  studyUids?: string[];
  /** For searches: the query as sent (`GET /fhir/Patient?name=x`); stored base64 (BALP Query). */
  query?: string;
  /** FHIR reference of the patient, when known (`Patient/123`). */
  patient?: string;
  /** HTTP status of the answer; decides the outcome unless `outcome` is given. */
  status?: number;
  outcome?: AuditEvent['outcome'];
  /** Short reason for a failure or denial (no PHI). */
  outcomeDescription?: string;
  agent: AuditAgent;
  requestId?: string;
  /** Extra facts (e.g. the SAML issuer, the grant type), kept as entity details. */
  details?: Record<string, string>;
  /** The projects the access was made within (its row filter); PIs search the trail by them. */
  projects?: string[];
}

/** Identity of the recording server (BALP source.observer). */
export interface AuditSource {
  observer: string;
  /** Base URL of the server, recorded as the destination agent's network address. */
  baseUrl?: string;
}

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const REST_INTERACTION = 'http://hl7.org/fhir/restful-interaction';
const EVENT_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-event-type';
const ENTITY_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-entity-type';
const OBJECT_ROLE = 'http://terminology.hl7.org/CodeSystem/object-role';
const BALP_ENTITY_TYPE = 'https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType';
const PARTICIPATION = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType';
/** Our roles, as codes in AuditEvent.agent.role. */
export const ROLE_SYSTEM = 'urn:imaging-lake:role';
/** Study Instance UIDs in entity.what.identifier (DICOM PS3.15 A.5.3 participant object id). */
export const STUDY_UID_SYSTEM = 'urn:dicom:uid';
/** Projects an access was made within, in entity.what.identifier. */
export const PROJECT_SYSTEM = 'urn:imaging-lake:project';

const ACTION_CODE: Record<AuditAction, NonNullable<AuditEvent['action']>> = {
  read: 'R',
  vread: 'R',
  history: 'R',
  search: 'E',
  create: 'C',
  update: 'U',
  patch: 'U',
  delete: 'D',
  operation: 'E',
  login: 'E',
};

/** AuditEvent.outcome for an HTTP status: 0 success, 4 minor failure (client error, denial), 8 serious failure. */
export function outcomeForStatus(status: number): AuditEvent['outcome'] {
  if (status < 400) return '0';
  if (status < 500) return '4';
  return '8';
}

function restSubtype(input: AuditInput): Coding {
  let code: string = input.action;
  if (input.action === 'search') code = input.resourceType ? 'search-type' : 'search-system';
  if (input.action === 'history') code = input.resourceId ? 'history-instance' : input.resourceType ? 'history-type' : 'history-system';
  return { system: REST_INTERACTION, code, display: code };
}

function eventType(input: AuditInput): { type: Coding; subtype: Coding[] } {
  if (input.protocol === 'auth') {
    return { type: { system: DCM, code: '110114', display: 'User Authentication' }, subtype: [{ system: DCM, code: '110122', display: 'Login' }] };
  }
  if (input.protocol === 'dicomweb' || input.protocol === 'dimse') {
    const subtype = [restSubtype({ ...input, resourceType: input.resourceType ?? 'ImagingStudy' })];
    if (input.action === 'search') return { type: { system: DCM, code: '110112', display: 'Query' }, subtype };
    if (input.action === 'delete') return { type: { system: DCM, code: '110105', display: 'DICOM Study Deleted' }, subtype };
    return { type: { system: DCM, code: '110104', display: 'DICOM Instances Transferred' }, subtype };
  }
  return { type: { system: EVENT_TYPE, code: 'rest', display: 'Restful Operation' }, subtype: [restSubtype(input)] };
}

/**
 * A version 7 UUID (RFC 9562 5.7): the 48-bit Unix time in ms of `at`, then 74 random bits.
 * Every access inserts an AuditEvent, and its id leads the primary key (id, recorded): random
 * (version 4) ids put each insert on a random leaf page of that index, which on a large trail
 * means a page read and, after every checkpoint, a full-page image in the WAL per insert; ids
 * in time order append at the index's right edge. The time it reveals is `recorded`.
 */
export function timeOrderedUuid(at: Date): string {
  const random = randomUUID();
  const ms = at.getTime().toString(16).padStart(12, '0').slice(-12);
  return `${ms.slice(0, 8)}-${ms.slice(8)}-7${random.slice(15)}`;
}

/** Builds one BALP-shaped AuditEvent (IHE BALP 1.1: Read, Query, Create, Update, Delete patterns). */
export function buildAuditEvent(input: AuditInput, source: AuditSource, recorded: Date = new Date()): AuditEvent {
  const { type, subtype } = eventType(input);
  const outcome = input.outcome ?? outcomeForStatus(input.status ?? 200);
  const a = input.agent;
  const event: AuditEvent = {
    resourceType: 'AuditEvent',
    id: timeOrderedUuid(recorded),
    type,
    subtype,
    action: ACTION_CODE[input.action],
    recorded: recorded.toISOString(),
    outcome,
    agent: [],
    source: { site: source.observer, observer: { display: source.observer }, type: [{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '4', display: 'Application Server' }] },
    entity: [],
  };
  if (input.outcomeDescription) event.outcomeDesc = input.outcomeDescription.slice(0, 500);

  // BALP: the client is the Source Role ID, this server the Destination Role ID.
  event.agent.push({
    type: { coding: [{ system: DCM, code: '110153', display: 'Source Role ID' }] },
    who: { display: a.address ?? 'unknown' },
    requestor: false,
    ...(a.address ? { network: { address: a.address, type: '2' as const } } : {}),
  });
  event.agent.push({
    type: { coding: [{ system: DCM, code: '110152', display: 'Destination Role ID' }] },
    who: { display: source.observer },
    requestor: false,
    ...(source.baseUrl ? { network: { address: source.baseUrl, type: '5' as const } } : {}),
  });
  const backendClient = a.clientId !== undefined && a.subject === a.clientId;
  if (a.clientId && !backendClient) {
    event.agent.push({
      type: { coding: [{ system: DCM, code: '110150', display: 'Application' }] },
      who: { identifier: { value: a.clientId } },
      requestor: false,
    });
  }
  // The user (or, for backend services, the client itself) is the requestor.
  event.agent.push({
    type: backendClient
      ? { coding: [{ system: DCM, code: '110150', display: 'Application' }] }
      : { coding: [{ system: PARTICIPATION, code: 'IRCP', display: 'information recipient' }] },
    ...(a.role ? { role: [{ coding: [{ system: ROLE_SYSTEM, code: a.role }] }] } : {}),
    who: a.subject
      ? { identifier: { ...(a.issuer ? { system: a.issuer } : {}), value: a.subject }, ...(a.displayName ? { display: a.displayName } : {}) }
      : { display: 'anonymous' },
    requestor: true,
    ...(a.tokenId ? { policy: [a.tokenId] } : {}),
  });

  const entities = event.entity!;
  if (input.query !== undefined) {
    entities.push({
      type: { system: ENTITY_TYPE, code: '2', display: 'System Object' },
      role: { system: OBJECT_ROLE, code: '24', display: 'Query' },
      query: Buffer.from(input.query, 'utf8').toString('base64'),
    });
  }
  if (input.resourceType && input.resourceId && input.protocol === 'fhir') {
    entities.push({
      what: { reference: `${input.resourceType}/${input.resourceId}` },
      type: { system: ENTITY_TYPE, code: '2', display: 'System Object' },
      role: { system: OBJECT_ROLE, code: '4', display: 'Domain Resource' },
    });
  }
  for (const uid of input.studyUids ?? []) {
    entities.push({
      what: { identifier: { system: STUDY_UID_SYSTEM, type: { coding: [{ system: DCM, code: '110180', display: 'Study Instance UID' }] }, value: uid } },
      type: { system: ENTITY_TYPE, code: '2', display: 'System Object' },
      role: { system: OBJECT_ROLE, code: '3', display: 'Report' },
    });
  }
  if (input.patient) {
    entities.push({
      what: { reference: input.patient },
      type: { system: ENTITY_TYPE, code: '1', display: 'Person' },
      role: { system: OBJECT_ROLE, code: '1', display: 'Patient' },
    });
  }
  if (input.requestId) {
    entities.push({ what: { identifier: { value: input.requestId } }, type: { system: BALP_ENTITY_TYPE, code: 'XrequestId' } });
  }
  for (const project of input.projects ?? []) {
    entities.push({ what: { identifier: { system: PROJECT_SYSTEM, value: project } }, type: { system: ENTITY_TYPE, code: '4', display: 'Other' } });
  }
  if (input.details && Object.keys(input.details).length > 0) {
    entities.push({
      type: { system: ENTITY_TYPE, code: '4', display: 'Other' },
      detail: Object.entries(input.details).map(([k, v]) => ({ type: k, valueString: String(v).slice(0, 500) })),
    });
  }
  if (entities.length === 0) delete event.entity;
  return event;
}

/** The indexed columns of an AuditEvent row, read back out of the resource. */
export interface AuditIndexColumns {
  type_code: string;
  subtype_code: string | null;
  action: string | null;
  outcome: string;
  agent_subject: string | null;
  agent_client_id: string | null;
  agent_role: string | null;
  agent_address: string | null;
  patient: string | null;
  entity: string[];
  request_id: string | null;
  /** Null when the access named no project (an admin's, a denial). */
  projects: string[] | null;
}

/** Extracts the search columns from an AuditEvent (the resource stays the single source of truth). */
export function auditIndexColumns(event: AuditEvent): AuditIndexColumns {
  const requestor = event.agent.find((g) => g.requestor);
  const app = event.agent.find((g) => g.type?.coding.some((c) => c.system === DCM && c.code === '110150'));
  const sourceRole = event.agent.find((g) => g.type?.coding.some((c) => c.system === DCM && c.code === '110153'));
  const entity: string[] = [];
  let patient: string | null = null;
  let requestId: string | null = null;
  const projects: string[] = [];
  for (const e of event.entity ?? []) {
    if (e.what?.identifier?.system === PROJECT_SYSTEM && e.what.identifier.value) {
      projects.push(e.what.identifier.value);
      continue;
    }
    if (e.type?.system === BALP_ENTITY_TYPE && e.type.code === 'XrequestId') {
      requestId = e.what?.identifier?.value ?? null;
      continue;
    }
    if (e.role?.code === '1' && e.what?.reference) {
      patient = e.what.reference;
      continue;
    }
    if (e.what?.reference) entity.push(e.what.reference);
    else if (e.what?.identifier?.value) entity.push(e.what.identifier.value);
  }
  return {
    type_code: event.type.code,
    subtype_code: event.subtype?.[0]?.code ?? null,
    action: event.action ?? null,
    outcome: event.outcome,
    agent_subject: requestor?.who?.identifier?.value ?? null,
    agent_client_id: app?.who?.identifier?.value ?? null,
    agent_role: requestor?.role?.[0]?.coding[0]?.code ?? null,
    agent_address: sourceRole?.network?.address ?? null,
    patient,
    entity,
    request_id: requestId,
    projects: projects.length > 0 ? projects : null,
  };
}
