/**
 * The AuditEvent of a request written straight to its row: the same JSON text, byte for byte,
 * and the same index columns as serializeAuditRow(buildAuditEvent(input, source, recorded)),
 * without building the resource as objects first. Every access writes one event; building it
 * and JSON.stringify over ~2 kB of nested objects was the largest single item of the audit's
 * Node.js CPU (CPU profile, QIDO-RS at 16 clients: about 33 µs of ~85 µs per request). The
 * constant parts (codings, the source, this server as destination agent) are JSON text already.
 * test/unit/audit/audit-row.test.ts checks the text and columns against the object path.
 */
import { ACTION_CODE, BALP_ENTITY_TYPE, DCM, ENTITY_TYPE, eventType, OBJECT_ROLE, outcomeForStatus, PARTICIPATION, ROLE_SYSTEM, STUDY_UID_SYSTEM, timeOrderedUuid, type AuditInput, type AuditSource } from './audit-event';
import { auditRowOf, type AuditRow } from './audit-store';

/** An AuditEvent ready for its INSERT: id and recorded time (for a later correction) and the row. */
export interface PreparedAuditEvent {
  id: string;
  recorded: string;
  row: AuditRow;
}

const q = JSON.stringify;
const coding = (system: string, code: string, display: string) => `{"system":${q(system)},"code":${q(code)},"display":${q(display)}}`;

const SOURCE_ROLE = `{"coding":[${coding(DCM, '110153', 'Source Role ID')}]}`;
const APPLICATION = `{"coding":[${coding(DCM, '110150', 'Application')}]}`;
const RECIPIENT = `{"coding":[${coding(PARTICIPATION, 'IRCP', 'information recipient')}]}`;
const SYSTEM_OBJECT = coding(ENTITY_TYPE, '2', 'System Object');
const QUERY_ENTITY_HEAD = `{"type":${SYSTEM_OBJECT},"role":${coding(OBJECT_ROLE, '24', 'Query')},"query":`;
const RESOURCE_ENTITY_TAIL = `},"type":${SYSTEM_OBJECT},"role":${coding(OBJECT_ROLE, '4', 'Domain Resource')}}`;
const STUDY_ENTITY_HEAD = `{"what":{"identifier":{"system":${q(STUDY_UID_SYSTEM)},"type":{"coding":[${coding(DCM, '110180', 'Study Instance UID')}]},"value":`;
const STUDY_ENTITY_TAIL = `}},"type":${SYSTEM_OBJECT},"role":${coding(OBJECT_ROLE, '3', 'Report')}}`;
const PATIENT_ENTITY_TAIL = `},"type":${coding(ENTITY_TYPE, '1', 'Person')},"role":${coding(OBJECT_ROLE, '1', 'Patient')}}`;
const REQUEST_ENTITY_TAIL = `}},"type":{"system":${q(BALP_ENTITY_TYPE)},"code":"XrequestId"}}`;
const OTHER_ENTITY_HEAD = `{"type":${coding(ENTITY_TYPE, '4', 'Other')},"detail":[`;

/** The JSON of the parts that depend on the recording server only: its destination agent and the source. */
interface SourceText {
  destination: string;
  source: string;
}
const sourceTexts = new WeakMap<AuditSource, SourceText>();

function sourceText(source: AuditSource): SourceText {
  let text = sourceTexts.get(source);
  if (!text) {
    const network = source.baseUrl ? `,"network":{"address":${q(source.baseUrl)},"type":"5"}` : '';
    text = {
      destination: `{"type":{"coding":[${coding(DCM, '110152', 'Destination Role ID')}]},"who":{"display":${q(source.observer)}},"requestor":false${network}}`,
      source: `{"site":${q(source.observer)},"observer":{"display":${q(source.observer)}},"type":[${coding('http://terminology.hl7.org/CodeSystem/security-source-type', '4', 'Application Server')}]}`,
    };
    sourceTexts.set(source, text);
  }
  return text;
}

/** The JSON of type and subtype, and their codes, per kind of access (a few dozen kinds). */
interface KindText {
  json: string;
  typeCode: string;
  subtypeCode: string | null;
}
const kindTexts = new Map<string, KindText>();

function kindText(input: AuditInput): KindText {
  // eventType reads the protocol, the action and whether a resource type and id are named.
  const key = `${input.protocol}|${input.action}|${input.resourceType ? 't' : ''}|${input.resourceId ? 'i' : ''}`;
  let text = kindTexts.get(key);
  if (!text) {
    const { type, subtype } = eventType(input);
    text = { json: `"type":${q(type)},"subtype":${q(subtype)}`, typeCode: type.code, subtypeCode: subtype[0]?.code ?? null };
    kindTexts.set(key, text);
  }
  return text;
}

/**
 * Builds the row of the AuditEvent that buildAuditEvent(input, source, recorded) describes
 * (IHE BALP 1.1 shape; see audit-event.ts for each part), with a new time-ordered id.
 */
export function prepareAuditEvent(input: AuditInput, source: AuditSource, recorded: Date = new Date()): PreparedAuditEvent {
  const id = timeOrderedUuid(recorded);
  const at = recorded.toISOString();
  const kind = kindText(input);
  const action = ACTION_CODE[input.action];
  const outcome = input.outcome ?? outcomeForStatus(input.status ?? 200);
  const a = input.agent;
  const texts = sourceText(source);

  // Agents, in buildAuditEvent's order: the client's network end, this server, the application, the requestor.
  const backendClient = a.clientId !== undefined && a.subject === a.clientId;
  let agents = `{"type":${SOURCE_ROLE},"who":{"display":${q(a.address ?? 'unknown')}},"requestor":false${a.address ? `,"network":{"address":${q(a.address)},"type":"2"}` : ''}},${texts.destination}`;
  if (a.clientId && !backendClient) agents += `,{"type":${APPLICATION},"who":{"identifier":{"value":${q(a.clientId)}}},"requestor":false}`;
  const who = a.subject
    ? `{"identifier":{${a.issuer ? `"system":${q(a.issuer)},` : ''}"value":${q(a.subject)}}${a.displayName ? `,"display":${q(a.displayName)}` : ''}}`
    : '{"display":"anonymous"}';
  agents += `,{"type":${backendClient ? APPLICATION : RECIPIENT}${a.role ? `,"role":[{"coding":[{"system":${q(ROLE_SYSTEM)},"code":${q(a.role)}}]}]` : ''},"who":${who},"requestor":true${a.tokenId ? `,"policy":[${q(a.tokenId)}]` : ''}}`;

  // Entities, in buildAuditEvent's order, and the index columns auditIndexColumns reads from them.
  const entities: string[] = [];
  const entityColumn: string[] = [];
  if (input.query !== undefined) entities.push(`${QUERY_ENTITY_HEAD}${q(Buffer.from(input.query, 'utf8').toString('base64'))}}`);
  if (input.resourceType && input.resourceId && input.protocol === 'fhir') {
    const reference = `${input.resourceType}/${input.resourceId}`;
    entities.push(`{"what":{"reference":${q(reference)}${RESOURCE_ENTITY_TAIL}`);
    entityColumn.push(reference);
  }
  for (const uid of input.studyUids ?? []) {
    entities.push(`${STUDY_ENTITY_HEAD}${q(uid)}${STUDY_ENTITY_TAIL}`);
    if (uid) entityColumn.push(uid);
  }
  if (input.patient) entities.push(`{"what":{"reference":${q(input.patient)}${PATIENT_ENTITY_TAIL}`);
  if (input.requestId) entities.push(`{"what":{"identifier":{"value":${q(input.requestId)}${REQUEST_ENTITY_TAIL}`);
  if (input.details && Object.keys(input.details).length > 0) {
    const detail = Object.entries(input.details).map(([k, v]) => `{"type":${q(k)},"valueString":${q(String(v).slice(0, 500))}}`);
    entities.push(`${OTHER_ENTITY_HEAD}${detail.join(',')}]}`);
  }

  const json =
    `{"resourceType":"AuditEvent","id":${q(id)},${kind.json}${action !== undefined ? `,"action":${q(action)}` : ''},"recorded":${q(at)},"outcome":${q(outcome)}` +
    `,"agent":[${agents}],"source":${texts.source}${entities.length > 0 ? `,"entity":[${entities.join(',')}]` : ''}` +
    `${input.outcomeDescription ? `,"outcomeDesc":${q(input.outcomeDescription.slice(0, 500))}` : ''}}`;
  const backendId = backendClient && a.subject ? a.subject : null;
  const row = auditRowOf(
    [
      id,
      at,
      kind.typeCode,
      kind.subtypeCode,
      action ?? null,
      outcome,
      a.subject ? a.subject : null,
      a.clientId && !backendClient ? a.clientId : backendId,
      a.role ? a.role : null,
      a.address ? a.address : null,
      input.patient ? input.patient : null,
      entityColumn,
      input.requestId ? input.requestId : null,
    ],
    json,
  );
  return { id, recorded: at, row };
}
