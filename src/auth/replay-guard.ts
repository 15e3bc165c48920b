/**
 * Durable replay protection: a client assertion's `jti` (SMART Backend Services, "JWT
 * authentication") or a SAML assertion ID may be used once. Rows live until the assertion's own
 * expiry; after that the assertion is refused for being expired anyway, and the row is purged.
 */
import type { Knex } from 'knex';

/**
 * Records `(issuer, jti)`; false when it is already recorded and not yet expired (a replay).
 * Atomic under concurrency: two requests with the same jti cannot both get true.
 */
export async function claimAssertionId(knex: Knex, issuer: string, jti: string, expiresAt: Date): Promise<boolean> {
  const rows = (await knex('auth_replay_guard')
    .insert({ issuer, jti, expires_at: expiresAt })
    .onConflict(['issuer', 'jti'])
    .merge({ expires_at: expiresAt })
    .where('auth_replay_guard.expires_at', '<', knex.fn.now())
    .returning('jti')) as unknown[];
  if (Math.random() < 0.01) await purgeExpiredAssertionIds(knex).catch(() => undefined);
  return rows.length > 0;
}

/** Deletes replay rows whose assertions expired more than an hour ago. */
export async function purgeExpiredAssertionIds(knex: Knex): Promise<number> {
  return knex('auth_replay_guard').where('expires_at', '<', knex.raw(`now() - interval '1 hour'`)).delete();
}
