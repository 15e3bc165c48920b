/**
 * The DIMSE peers in effect: those DIMSE_PEERS configures (fixed for the life of the process) and
 * those managed through the admin API (table `dimse_peers`, src/admin/dimse-peers.ts). The
 * listener asks for them at each association and C-MOVE; the managed ones are read at most once
 * per `maxAgeMs`, so a change made through any replica takes effect everywhere within it.
 */
import type { Knex } from 'knex';
import { DimsePeerSchema, type DimsePeer } from '../config';
import type { Logger } from '../logger';

/** The peers a listener works with. */
export interface PeerDirectory {
  /** Configured peers first, then managed ones (a managed peer never shadows a configured one). */
  list(): Promise<readonly DimsePeer[]>;
}

/** How long a read of the managed peers is used before the next. */
const MAX_AGE_MS = 1_000;

/**
 * Configured plus managed peers. A managed row that no longer parses is left out (and logged);
 * when the table cannot be read, the last list read is used (the configured peers at first), so
 * a database outage does not turn peers away that were accepted a moment before.
 */
export function createPeerDirectory(knex: Knex, configured: readonly DimsePeer[], logger: Logger, maxAgeMs = MAX_AGE_MS): PeerDirectory {
  let current: readonly DimsePeer[] = configured;
  let readAt = -Infinity;
  let reading: Promise<readonly DimsePeer[]> | undefined;
  const configuredTitles = new Set(configured.map((p) => p.aeTitle));
  const read = async (): Promise<readonly DimsePeer[]> => {
    try {
      const rows: Array<{ ae_title: string; definition: unknown }> = await knex('dimse_peers').select('ae_title', 'definition').orderBy('ae_title');
      const managed: DimsePeer[] = [];
      for (const row of rows) {
        if (configuredTitles.has(row.ae_title)) continue;
        const definition = typeof row.definition === 'string' ? JSON.parse(row.definition) : row.definition;
        const parsed = DimsePeerSchema.safeParse({ ...(definition as object), aeTitle: row.ae_title });
        if (parsed.success) managed.push(parsed.data);
        else logger.warn({ aeTitle: row.ae_title, issues: parsed.error.issues }, 'a managed DIMSE peer does not parse: left out');
      }
      current = [...configured, ...managed];
    } catch (err) {
      logger.error({ err }, 'managed DIMSE peers could not be read: the last list read stays in effect');
    }
    readAt = performance.now();
    return current;
  };
  return {
    list() {
      if (performance.now() - readAt < maxAgeMs) return Promise.resolve(current);
      reading ??= read().finally(() => (reading = undefined));
      return reading;
    },
  };
}
