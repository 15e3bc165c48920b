import { buildAuditEvent, type AuditAction, type AuditInput, type AuditSource } from '../../../src/audit/audit-event';
import { prepareAuditEvent } from '../../../src/audit/audit-row';
import { serializeAuditRow } from '../../../src/audit/audit-store';

/** The row the object path writes for `input`, with the id of `id` (ids are random). */
function objectRow(input: AuditInput, source: AuditSource, at: Date, id: string) {
  return serializeAuditRow({ ...buildAuditEvent(input, source, at), id });
}

const sources: AuditSource[] = [{ observer: 'imaging-lake', baseUrl: 'https://lake.example/fhir' }, { observer: 'lake "two"' }];
const agents: AuditInput['agent'][] = [
  { subject: 'u1', issuer: 'https://idp.example', clientId: 'viewer', role: 'researcher', displayName: 'Dr "Q"', tokenId: 'jti-1', address: '10.0.0.7' },
  { subject: 'svc', clientId: 'svc', role: 'admin', address: '::1' },
  { subject: '', clientId: '' },
  { clientId: 'cli' },
  {},
];
const actions: AuditAction[] = ['read', 'vread', 'search', 'history', 'create', 'update', 'patch', 'delete', 'operation', 'login'];

function inputs(): AuditInput[] {
  const out: AuditInput[] = [];
  for (const protocol of ['fhir', 'dicomweb', 'auth'] as const) {
    for (const action of actions) {
      for (const agent of agents) {
        out.push({ protocol, action, agent, status: 200 });
        out.push({ protocol, action, agent, resourceType: 'Patient', resourceId: 'p-1', requestId: 'r-1', patient: 'Patient/p-1', status: 404 });
        out.push({ protocol, action, agent, resourceType: 'ImagingStudy', query: 'GET /dicomweb/studies?PatientID=ü\u0000x', studyUids: ['1.2.3', '', '1.2.4'], outcome: '8', outcomeDescription: 'x'.repeat(600) });
        out.push({ protocol, action, agent, details: { grant: 'client_credentials', 'saml\nissuer': 'a\u2028b' }, outcomeDescription: 'denied: "scope"', status: 403 });
        out.push({ protocol, action, agent, details: {}, studyUids: [], status: 500 });
      }
    }
  }
  return out;
}

describe('prepareAuditEvent', () => {
  test('writes, for every kind of access and agent, the same JSON text and index columns as building and serializing the event', () => {
    const at = new Date('2026-11-23T17:00:00.123Z');
    let compared = 0;
    for (const source of sources) {
      for (const input of inputs()) {
        const prepared = prepareAuditEvent(input, source, at);
        const expected = objectRow(input, source, at, prepared.id);
        expect(prepared.row.resource).toBe(expected.resource);
        expect(prepared.row.columns).toEqual(expected.columns);
        expect(prepared.recorded).toBe(at.toISOString());
        compared += 1;
      }
    }
    expect(compared).toBe(2 * 3 * actions.length * agents.length * 5);
  });

  test('gives each event its own time-ordered id, recorded within the same millisecond', () => {
    const at = new Date('2026-11-23T17:00:00.123Z');
    const input: AuditInput = { protocol: 'fhir', action: 'read', agent: { subject: 'u' } };
    const a = prepareAuditEvent(input, sources[0], at);
    const b = prepareAuditEvent(input, sources[0], at);
    expect(a.id).not.toBe(b.id);
    expect(a.id.slice(0, 13)).toBe(b.id.slice(0, 13));
    expect(a.id[14]).toBe('7');
    expect(JSON.parse(a.row.resource).id).toBe(a.id);
  });

  test('replaces U+0000, which PostgreSQL text cannot hold, in the resource and the columns', () => {
    const prepared = prepareAuditEvent({ protocol: 'fhir', action: 'read', agent: { subject: 'a\u0000b' }, requestId: 'r\u0000' }, sources[0]);
    expect(prepared.row.resource).not.toContain('\\u0000');
    expect(prepared.row.columns).toContain('a\ufffdb');
    expect(prepared.row.columns).toContain('r\ufffd');
  });
});
