import { auditIndexColumns, buildAuditEvent, outcomeForStatus, timeOrderedUuid, type AuditInput } from '../../../src/audit/audit-event';

const source = { observer: 'imaging-lake', baseUrl: 'http://il.test' };
const agent = { subject: 'alice', issuer: 'http://il.test', clientId: 'viewer', role: 'researcher', tokenId: 'jti-1', address: '10.0.0.5' };

function build(input: Partial<AuditInput>) {
  return buildAuditEvent({ protocol: 'fhir', action: 'read', agent, ...input }, source, new Date('2026-11-22T10:00:00Z'));
}

describe('buildAuditEvent (IHE BALP)', () => {
  test('a FHIR read: rest/read, action R, success, patient and resource entities, request id', () => {
    const e = build({ resourceType: 'Condition', resourceId: 'c1', patient: 'Patient/p1', status: 200, requestId: 'req-1' });
    expect(e.type).toEqual({ system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest', display: 'Restful Operation' });
    expect(e.subtype).toEqual([{ system: 'http://hl7.org/fhir/restful-interaction', code: 'read', display: 'read' }]);
    expect(e.action).toBe('R');
    expect(e.outcome).toBe('0');
    expect(e.recorded).toBe('2026-11-22T10:00:00.000Z');
    expect(e.source.observer.display).toBe('imaging-lake');
    expect(e.entity).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ what: { reference: 'Condition/c1' }, role: expect.objectContaining({ code: '4' }) }),
        expect.objectContaining({ what: { reference: 'Patient/p1' }, type: expect.objectContaining({ code: '1' }), role: expect.objectContaining({ code: '1' }) }),
        expect.objectContaining({ what: { identifier: { value: 'req-1' } }, type: expect.objectContaining({ code: 'XrequestId' }) }),
      ]),
    );
  });

  test('agents: source (client address), destination (this server), application, and the user as requestor with role and token id', () => {
    const e = build({ status: 200 });
    const codes = e.agent.map((a) => a.type?.coding[0].code);
    expect(codes).toEqual(['110153', '110152', '110150', 'IRCP']);
    expect(e.agent[0].network).toEqual({ address: '10.0.0.5', type: '2' });
    expect(e.agent[2].who?.identifier?.value).toBe('viewer');
    const user = e.agent[3];
    expect(user.requestor).toBe(true);
    expect(user.who?.identifier).toEqual({ system: 'http://il.test', value: 'alice' });
    expect(user.role?.[0].coding[0]).toEqual({ system: 'urn:imaging-lake:role', code: 'researcher' });
    expect(user.policy).toEqual(['jti-1']);
  });

  test('a backend client is the requestor itself (type Application)', () => {
    const e = build({ agent: { subject: 'svc', clientId: 'svc', role: 'admin' } });
    const requestors = e.agent.filter((a) => a.requestor);
    expect(requestors).toHaveLength(1);
    expect(requestors[0].type?.coding[0].code).toBe('110150');
  });

  test('a search: search-type, action E, the query base64 encoded', () => {
    const e = build({ action: 'search', resourceType: 'Patient', query: 'GET /fhir/Patient?name=smith' });
    expect(e.subtype?.[0].code).toBe('search-type');
    expect(e.action).toBe('E');
    const q = e.entity!.find((x) => x.role?.code === '24')!;
    expect(Buffer.from(q.query!, 'base64').toString('utf8')).toBe('GET /fhir/Patient?name=smith');
  });

  test.each([
    ['create', 'C', 'create'],
    ['update', 'U', 'update'],
    ['patch', 'U', 'patch'],
    ['delete', 'D', 'delete'],
    ['vread', 'R', 'vread'],
  ] as const)('FHIR %s -> action %s', (action, code, subtype) => {
    const e = build({ action, resourceType: 'Patient', resourceId: 'p1' });
    expect(e.action).toBe(code);
    expect(e.subtype?.[0].code).toBe(subtype);
  });

  test.each([
    ['read', '110104', 'R'],
    ['create', '110104', 'C'],
    ['search', '110112', 'E'],
    ['delete', '110105', 'D'],
  ] as const)('DICOMweb %s -> DICOM %s, action %s, study UID entity', (action, type, code) => {
    const e = build({ protocol: 'dicomweb', action, studyUids: ['1.2.3'] });
    expect(e.type).toMatchObject({ system: 'http://dicom.nema.org/resources/ontology/DCM', code: type });
    expect(e.action).toBe(code);
    expect(e.entity?.[0].what?.identifier).toMatchObject({ value: '1.2.3', type: { coding: [expect.objectContaining({ code: '110180' })] } });
  });

  test('a sign-in: DICOM 110114 User Authentication, subtype Login', () => {
    const e = build({ protocol: 'auth', action: 'login', status: 401, outcomeDescription: 'invalid_client: unknown client' });
    expect(e.type.code).toBe('110114');
    expect(e.subtype?.[0].code).toBe('110122');
    expect(e.outcome).toBe('4');
    expect(e.outcomeDesc).toBe('invalid_client: unknown client');
  });

  test('outcome codes follow the status', () => {
    expect([outcomeForStatus(200), outcomeForStatus(204), outcomeForStatus(403), outcomeForStatus(404), outcomeForStatus(503)]).toEqual(['0', '0', '4', '4', '8']);
  });

  test('an anonymous request records an anonymous requestor', () => {
    const e = buildAuditEvent({ protocol: 'fhir', action: 'search', resourceType: 'Patient', agent: {}, status: 401 }, source);
    expect(e.agent.find((a) => a.requestor)?.who).toEqual({ display: 'anonymous' });
  });
});

describe('auditIndexColumns', () => {
  test('reads the search keys back out of the resource', () => {
    const e = build({ protocol: 'dicomweb', action: 'read', studyUids: ['1.2.3'], patient: 'Patient/p9', requestId: 'r9', status: 403 });
    expect(auditIndexColumns(e)).toEqual({
      type_code: '110104',
      subtype_code: 'read',
      action: 'R',
      outcome: '4',
      agent_subject: 'alice',
      agent_client_id: 'viewer',
      agent_role: 'researcher',
      agent_address: '10.0.0.5',
      patient: 'Patient/p9',
      entity: ['1.2.3'],
      request_id: 'r9',
      projects: null,
    });
  });

  test('the projects an access was made within: entities of the resource, their own column (not entity)', () => {
    const e = build({ protocol: 'fhir', action: 'read', resourceType: 'Patient', resourceId: 'p1', projects: ['pa', 'pb'], status: 200 });
    expect(e.entity).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ what: { identifier: { system: 'urn:imaging-lake:project', value: 'pa' } } }),
        expect.objectContaining({ what: { identifier: { system: 'urn:imaging-lake:project', value: 'pb' } } }),
      ]),
    );
    const k = auditIndexColumns(e);
    expect(k.projects).toEqual(['pa', 'pb']);
    expect(k.entity).toEqual(['Patient/p1']);
  });
});

describe('timeOrderedUuid (AuditEvent ids, RFC 9562 UUID version 7)', () => {
  const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

  test('an event id is a version 7 UUID whose first 48 bits are its recorded time in ms', () => {
    const e = build({});
    expect(e.id).toMatch(UUID_V7);
    expect(parseInt(e.id.replace(/-/g, '').slice(0, 12), 16)).toBe(Date.parse(e.recorded));
  });

  test('ids of later events sort after earlier ones (the primary key grows at its right edge); ids of the same ms differ', () => {
    const times = [0, 1, 255, 256, 1_700_000_000_000, 1_800_000_000_001, 2 ** 48 - 1].map((ms) => new Date(ms));
    const ids = times.map((t) => timeOrderedUuid(t));
    for (const id of ids) expect(id).toMatch(UUID_V7);
    expect([...ids].sort()).toEqual(ids);
    const same = new Set(Array.from({ length: 100 }, () => timeOrderedUuid(times[4])));
    expect(same.size).toBe(100);
  });
});
