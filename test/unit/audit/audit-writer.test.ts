import type { Knex } from 'knex';
import { buildAuditEvent, type AuditEvent } from '../../../src/audit/audit-event';
import { AuditWriteError, serializeAuditRow } from '../../../src/audit/audit-store';
import { createAuditWriter } from '../../../src/audit/audit-writer';

type Row = { id: string; resource: AuditEvent };

/** A stand-in for knex whose audit INSERTs commit or fail when the test says so. */
function controlledKnex() {
  const inserts: Array<{ rows: Row[]; commit(): void; fail(err: Error & { code?: string }): void }> = [];
  const knex = {
    raw: (sql: string, bindings: string[]) =>
      new Promise<void>((resolve, reject) => {
        expect(sql).toMatch(/^INSERT INTO audit_events /);
        inserts.push({ rows: JSON.parse(bindings[0]) as Row[], commit: () => resolve(), fail: reject });
      }),
  } as unknown as Knex;
  return { knex, inserts };
}

/** A stand-in that commits every INSERT on its own, refusing rows a predicate rejects with `code`. */
function autoKnex(refuse?: (row: Row) => boolean, code = '22P05') {
  const committed: Row[] = [];
  let statements = 0;
  const knex = {
    raw: async (_sql: string, bindings: string[]) => {
      await Promise.resolve();
      statements++;
      const rows = JSON.parse(bindings[0]) as Row[];
      if (refuse && rows.some(refuse)) throw Object.assign(new Error('unsupported Unicode escape sequence'), { code });
      committed.push(...rows);
    },
  } as unknown as Knex;
  return { knex, committed, statements: () => statements };
}

const event = (resourceId: string) => buildAuditEvent({ protocol: 'fhir', action: 'read', resourceType: 'Patient', resourceId, agent: { subject: 'alice' } }, { observer: 'test' });
/** Lets the event loop finish its turn (the writer flushes at setImmediate). */
const turn = () => new Promise((r) => setImmediate(r));

/** Tracks whether a promise has settled, and how. */
function track(p: Promise<void>) {
  const state = { settled: false, ok: false, error: undefined as unknown };
  p.then(
    () => Object.assign(state, { settled: true, ok: true }),
    (error) => Object.assign(state, { settled: true, error }),
  );
  return state;
}

describe('the audit group-commit writer', () => {
  test('a lone event is inserted at the end of the turn (no waiting for company) and resolves only once committed', async () => {
    const { knex, inserts } = controlledKnex();
    const w = track(createAuditWriter(knex).write(event('a')));
    await turn();
    expect(inserts).toHaveLength(1);
    expect(inserts[0].rows.map((r) => r.resource.entity?.[0].what?.reference)).toEqual(['Patient/a']);
    await turn();
    expect(w.settled).toBe(false);
    inserts[0].commit();
    await turn();
    expect(w.ok).toBe(true);
  });

  test('events queued in the same turn share one INSERT', async () => {
    const { knex, inserts } = controlledKnex();
    const writer = createAuditWriter(knex);
    const states = Array.from({ length: 10 }, (_, i) => track(writer.write(event(`p${i}`))));
    await turn();
    expect(inserts).toHaveLength(1);
    expect(inserts[0].rows).toHaveLength(10);
    inserts[0].commit();
    await turn();
    expect(states.every((s) => s.ok)).toBe(true);
  });

  test('events queued while an INSERT runs wait for it, then go together in the next one', async () => {
    const { knex, inserts } = controlledKnex();
    const writer = createAuditWriter(knex);
    const first = track(writer.write(event('first')));
    await turn();
    const later = ['b', 'c', 'd'].map((id) => track(writer.write(event(id))));
    await turn();
    expect(inserts).toHaveLength(1);
    inserts[0].commit();
    await turn();
    expect(first.ok).toBe(true);
    expect(later.some((s) => s.settled)).toBe(false);
    expect(inserts).toHaveLength(2);
    expect(inserts[1].rows).toHaveLength(3);
    inserts[1].commit();
    await turn();
    expect(later.every((s) => s.ok)).toBe(true);
    expect(writer.stats()).toEqual({ events: 4, batches: 2, failed: 0, largestBatch: 3, corrected: 0 });
  });

  test('an event written with now on an idle writer is sent in the caller\'s turn, with whatever this turn queued before it', async () => {
    const { knex, inserts } = controlledKnex();
    const writer = createAuditWriter(knex);
    const before = track(writer.write(event('before')));
    const urgent = track(writer.write(event('urgent'), { now: true }));
    // No turn has passed: the INSERT is already on its way.
    expect(inserts).toHaveLength(1);
    expect(inserts[0].rows.map((r) => r.resource.entity?.[0].what?.reference)).toEqual(['Patient/before', 'Patient/urgent']);
    await turn();
    expect(inserts).toHaveLength(1);
    expect(urgent.settled).toBe(false);
    inserts[0].commit();
    await turn();
    expect(before.ok && urgent.ok).toBe(true);
  });

  test('an event written with now while an INSERT runs waits for it like any other', async () => {
    const { knex, inserts } = controlledKnex();
    const writer = createAuditWriter(knex);
    writer.write(event('first'));
    await turn();
    const urgent = track(writer.write(event('urgent'), { now: true }));
    await turn();
    expect(inserts).toHaveLength(1);
    inserts[0].commit();
    await turn();
    expect(inserts).toHaveLength(2);
    expect(inserts[1].rows.map((r) => r.resource.entity?.[0].what?.reference)).toEqual(['Patient/urgent']);
    inserts[1].commit();
    await turn();
    expect(urgent.ok).toBe(true);
  });

  test('a full batch is flushed without waiting for the running INSERT, up to maxInFlight at once', async () => {
    const { knex, inserts } = controlledKnex();
    const writer = createAuditWriter(knex, { maxBatch: 3, maxInFlight: 2 });
    writer.write(event('a'));
    await turn();
    expect(inserts).toHaveLength(1);
    ['b', 'c', 'd'].forEach((id) => writer.write(event(id)));
    expect(inserts).toHaveLength(2);
    expect(inserts[1].rows).toHaveLength(3);
    ['e', 'f', 'g'].forEach((id) => writer.write(event(id)));
    await turn();
    expect(inserts).toHaveLength(2);
    inserts[0].commit();
    await turn();
    expect(inserts).toHaveLength(3);
    expect(inserts[2].rows.map((r) => r.resource.entity?.[0].what?.reference)).toEqual(['Patient/e', 'Patient/f', 'Patient/g']);
  });

  test('a failed INSERT rejects every waiter of its batch with AuditWriteError, and the next batch still commits', async () => {
    const { knex, inserts } = controlledKnex();
    const writer = createAuditWriter(knex);
    const doomed = ['a', 'b', 'c'].map((id) => writer.write(event(id)));
    await turn();
    inserts[0].fail(new Error('connection terminated'));
    for (const p of doomed) await expect(p).rejects.toThrow(AuditWriteError);
    await expect(doomed[0]).rejects.toThrow(/audit trail unavailable: connection terminated/);
    const next = track(writer.write(event('d')));
    await turn();
    inserts[1].commit();
    await turn();
    expect(next.ok).toBe(true);
    expect(writer.stats()).toMatchObject({ events: 1, batches: 1, failed: 3 });
  });

  test('a row the database refuses (data error) fails only its own waiter: the batch is split and retried', async () => {
    const { knex, committed } = autoKnex((row) => row.resource.entity?.[0].what?.reference === 'Patient/bad');
    const writer = createAuditWriter(knex);
    const ids = ['a', 'b', 'bad', 'c', 'd'];
    const results = await Promise.allSettled(ids.map((id) => writer.write(event(id))));
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    expect(committed.map((r) => r.resource.entity?.[0].what?.reference).sort()).toEqual(['Patient/a', 'Patient/b', 'Patient/c', 'Patient/d']);
  });

  test('a database-wide failure is not retried row by row', async () => {
    const { knex, statements } = autoKnex(() => true, '42P01');
    const writer = createAuditWriter(knex);
    const results = await Promise.allSettled(['a', 'b', 'c', 'd'].map((id) => writer.write(event(id))));
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    expect(statements()).toBe(1);
  });

  test('close() commits everything queued, then refuses new events', async () => {
    const { knex, committed } = autoKnex();
    const writer = createAuditWriter(knex, { maxBatch: 4 });
    const queued = Array.from({ length: 10 }, (_, i) => writer.write(event(`q${i}`)));
    await writer.close();
    expect(committed).toHaveLength(10);
    await expect(Promise.all(queued)).resolves.toBeDefined();
    await expect(writer.write(event('late'))).rejects.toThrow(/closed/);
    expect(committed).toHaveLength(10);
  });

  test('serializeAuditRow stringifies the event once into the row and replaces U+0000, which PostgreSQL cannot store', () => {
    const e = buildAuditEvent({ protocol: 'auth', action: 'login', agent: { subject: 'nul\u0000user' }, details: { issuer: 'evil\u0000issuer', path: 'C:\\u0000dir' } }, { observer: 'test' });
    const row = serializeAuditRow(e);
    expect(row.columns.slice(0, 3)).toEqual([e.id, e.recorded, '110114']);
    // agent_subject, a text column: the character itself is replaced too.
    expect(row.columns[6]).toBe('nul\ufffduser');
    const resource = JSON.parse(row.resource);
    expect(resource.id).toBe(e.id);
    const details = resource.entity.find((x: { detail?: unknown }) => x.detail).detail;
    expect(details).toEqual([
      { type: 'issuer', valueString: 'evil\ufffdissuer' },
      { type: 'path', valueString: 'C:\\u0000dir' },
    ]);
  });
});
