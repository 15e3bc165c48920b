import type { Knex } from 'knex';
import { DimsePeerSchema, type DimsePeer } from '../config';
import { fhirError, notFound } from '../fhir/outcome';
import { objectBody } from '../http/json-body';

/**
 * DIMSE peers administered over HTTP (`/admin/dimse/peers`, admins only): the peers of
 * DIMSE_PEERS are shown and cannot be changed here (their settings live in the environment); the
 * others are rows of `dimse_peers`, each in DIMSE_PEERS' own shape. Listeners take a change up
 * within a second (src/dimse/peer-directory.ts), on every replica.
 */

/** A peer as the API shows it. */
export type PeerView = DimsePeer & {
  /** `configured`: from DIMSE_PEERS (read-only here); `managed`: through this API. */
  source: 'configured' | 'managed';
  updatedAt?: string;
  updatedBy?: string;
};

interface PeerRow {
  ae_title: string;
  definition: unknown;
  updated_at: Date | string;
  updated_by: string;
}

function viewOf(row: PeerRow): PeerView {
  const definition = typeof row.definition === 'string' ? JSON.parse(row.definition) : row.definition;
  return { ...(definition as Omit<DimsePeer, 'aeTitle'>), aeTitle: row.ae_title, source: 'managed', updatedAt: new Date(row.updated_at).toISOString(), updatedBy: row.updated_by };
}

/** The AE title of a path, trimmed (PS3.5 6.2: leading and trailing spaces are not significant). */
function titleOf(aeTitle: string): string {
  const parsed = DimsePeerSchema.shape.aeTitle.safeParse(aeTitle);
  if (!parsed.success) throw fhirError(400, 'invalid', `AE title "${aeTitle}": ${parsed.error.issues[0]?.message ?? 'not an AE title'}`);
  return parsed.data;
}

function configuredPeer(configured: readonly DimsePeer[], aeTitle: string): DimsePeer | undefined {
  return configured.find((p) => p.aeTitle === aeTitle);
}

/** Every peer: the configured ones, then the managed ones by AE title. */
export async function listDimsePeers(knex: Knex, configured: readonly DimsePeer[]): Promise<PeerView[]> {
  const rows: PeerRow[] = await knex('dimse_peers').select('*').orderBy('ae_title');
  const titles = new Set(configured.map((p) => p.aeTitle));
  return [...configured.map((p): PeerView => ({ ...p, source: 'configured' })), ...rows.filter((r) => !titles.has(r.ae_title)).map(viewOf)];
}

/** One peer; 404 when there is none of that AE title. */
export async function getDimsePeer(knex: Knex, configured: readonly DimsePeer[], aeTitle: string): Promise<PeerView> {
  const title = titleOf(aeTitle);
  const fixed = configuredPeer(configured, title);
  if (fixed) return { ...fixed, source: 'configured' };
  const row: PeerRow | undefined = await knex('dimse_peers').where({ ae_title: title }).first();
  if (!row) throw notFound(`no DIMSE peer "${title}"`);
  return viewOf(row);
}

/**
 * Creates or replaces a managed peer from a body in DIMSE_PEERS' shape (`aeTitle` may be left
 * out; given, it must be the path's). 400 for a body that does not parse, 409 for a peer
 * DIMSE_PEERS configures. Resolves with the peer and whether it is new.
 */
export async function putDimsePeer(knex: Knex, configured: readonly DimsePeer[], aeTitle: string, body: unknown, by: string): Promise<{ created: boolean; peer: PeerView }> {
  const title = titleOf(aeTitle);
  const input = objectBody(body, 'describing the peer (host, port, projects, services, tls)');
  if (input.aeTitle !== undefined && (typeof input.aeTitle !== 'string' || input.aeTitle.trim() !== title)) throw fhirError(400, 'invalid', `aeTitle: "${String(input.aeTitle)}" is not the path's AE title "${title}"`, ['aeTitle']);
  const parsed = DimsePeerSchema.safeParse({ ...input, aeTitle: title });
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw fhirError(400, 'invalid', `${issue.path.join('.') || 'body'}: ${issue.message}`, issue.path.length ? [issue.path.join('.')] : undefined);
  }
  if (configuredPeer(configured, title)) throw fhirError(409, 'conflict', `DIMSE peer "${title}" is configured by DIMSE_PEERS: change it there`);
  const { aeTitle: _omit, ...definition } = parsed.data;
  return knex.transaction(async (trx) => {
    const existing = await trx('dimse_peers').where({ ae_title: title }).forUpdate().first('ae_title');
    const values = { definition: JSON.stringify(definition), updated_at: trx.fn.now(), updated_by: by };
    const [row]: PeerRow[] = existing
      ? await trx('dimse_peers').where({ ae_title: title }).update(values).returning('*')
      : await trx('dimse_peers').insert({ ae_title: title, ...values }).returning('*');
    return { created: !existing, peer: viewOf(row!) };
  });
}

/** Removes a managed peer: 404 when there is none, 409 for a configured one. */
export async function deleteDimsePeer(knex: Knex, configured: readonly DimsePeer[], aeTitle: string): Promise<void> {
  const title = titleOf(aeTitle);
  if (configuredPeer(configured, title)) throw fhirError(409, 'conflict', `DIMSE peer "${title}" is configured by DIMSE_PEERS: remove it there`);
  const removed = await knex('dimse_peers').where({ ae_title: title }).delete();
  if (removed === 0) throw notFound(`no DIMSE peer "${title}"`);
}
