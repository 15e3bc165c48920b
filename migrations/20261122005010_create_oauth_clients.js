/**
 * OAuth client registrations (SMART Backend Services: keys by value or by JWKS URL, the scopes
 * a client may ask for, its role and projects) and the replay guard: every client assertion
 * `jti` (and SAML assertion ID) seen, kept until the assertion would have expired anyway.
 */

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.schema.createTable('oauth_clients', (t) => {
    t.text('client_id').primary();
    t.text('name').notNullable();
    t.jsonb('jwks');
    t.text('jwks_uri');
    t.specificType('scopes', 'text[]').notNullable().defaultTo('{}');
    t.text('role').notNullable();
    t.specificType('projects', 'text[]').notNullable().defaultTo('{}');
    t.text('facility');
    t.boolean('enabled').notNullable().defaultTo(true);
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw(`ALTER TABLE oauth_clients ADD CONSTRAINT oauth_clients_keys_check
    CHECK ((jwks IS NULL) <> (jwks_uri IS NULL))`);
  await knex.raw(`ALTER TABLE oauth_clients ADD CONSTRAINT oauth_clients_role_check
    CHECK (role IN ('admin', 'data-manager', 'researcher', 'pi'))`);

  await knex.schema.createTable('auth_replay_guard', (t) => {
    t.text('issuer').notNullable();
    t.text('jti').notNullable();
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.primary(['issuer', 'jti']);
    t.index(['expires_at']);
  });
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex.schema.dropTableIfExists('auth_replay_guard');
  await knex.schema.dropTableIfExists('oauth_clients');
};
