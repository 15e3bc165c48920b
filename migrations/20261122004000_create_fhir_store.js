/**
 * The FHIR R4 store: current versions, every version (history), and the search index tables
 * written at the same time as the resource, in the same transaction. One index table per
 * SearchParameter type; each leads with (resource_type, param, value) so an indexed search is an
 * index scan, and carries an (rid, param) index for includes, sorting and rewrites.
 * text_pattern_ops makes left-anchored LIKE (string prefix, token :below, uri :below) indexable
 * whatever the database collation.
 */

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  // rid is the row key the index tables point at. It is looked up by equality only, so it gets a
  // hash index: an ordered btree on rid would let the planner walk every type's rows in rid
  // order looking for one type's matches. Ordered walks go through (resource_type, rid) instead.
  await knex.raw(`
    CREATE TABLE fhir_resource (
      rid bigserial NOT NULL,
      resource_type text NOT NULL,
      id text NOT NULL,
      version_id integer NOT NULL,
      last_updated timestamptz NOT NULL,
      deleted boolean NOT NULL DEFAULT false,
      content jsonb,
      PRIMARY KEY (resource_type, id)
    )`);
  await knex.raw('CREATE INDEX fhir_resource_rid_idx ON fhir_resource USING hash (rid)');
  // Search pages are ordered by rid within a type, over live rows only.
  await knex.raw('CREATE INDEX fhir_resource_type_rid_idx ON fhir_resource (resource_type, rid) WHERE NOT deleted');
  await knex.raw('CREATE INDEX fhir_resource_type_updated_idx ON fhir_resource (resource_type, last_updated)');

  await knex.raw(`
    CREATE TABLE fhir_resource_history (
      rid bigint NOT NULL,
      version_id integer NOT NULL,
      resource_type text NOT NULL,
      id text NOT NULL,
      last_updated timestamptz NOT NULL,
      method text NOT NULL,
      deleted boolean NOT NULL DEFAULT false,
      content jsonb,
      PRIMARY KEY (rid, version_id)
    )`);
  await knex.raw('CREATE INDEX fhir_resource_history_type_updated_idx ON fhir_resource_history (resource_type, last_updated)');
  await knex.raw('CREATE INDEX fhir_resource_history_updated_idx ON fhir_resource_history (last_updated)');

  await knex.raw(`
    CREATE TABLE fhir_token (
      rid bigint NOT NULL, resource_type text NOT NULL, param text NOT NULL,
      system text, code text, text text
    )`);
  await knex.raw('CREATE INDEX fhir_token_code_idx ON fhir_token (resource_type, param, code text_pattern_ops, system)');
  await knex.raw('CREATE INDEX fhir_token_text_idx ON fhir_token (resource_type, param, text text_pattern_ops) WHERE text IS NOT NULL');
  await knex.raw('CREATE INDEX fhir_token_rid_idx ON fhir_token (rid, param)');

  await knex.raw(`
    CREATE TABLE fhir_string (
      rid bigint NOT NULL, resource_type text NOT NULL, param text NOT NULL,
      value text NOT NULL, exact text NOT NULL
    )`);
  await knex.raw('CREATE INDEX fhir_string_value_idx ON fhir_string (resource_type, param, value text_pattern_ops)');
  await knex.raw('CREATE INDEX fhir_string_rid_idx ON fhir_string (rid, param)');

  await knex.raw(`
    CREATE TABLE fhir_date (
      rid bigint NOT NULL, resource_type text NOT NULL, param text NOT NULL,
      low timestamptz NOT NULL, high timestamptz NOT NULL
    )`);
  await knex.raw('CREATE INDEX fhir_date_low_idx ON fhir_date (resource_type, param, low)');
  await knex.raw('CREATE INDEX fhir_date_high_idx ON fhir_date (resource_type, param, high)');
  await knex.raw('CREATE INDEX fhir_date_rid_idx ON fhir_date (rid, param)');

  await knex.raw(`
    CREATE TABLE fhir_number (
      rid bigint NOT NULL, resource_type text NOT NULL, param text NOT NULL,
      low numeric, high numeric, system text, code text
    )`);
  await knex.raw('CREATE INDEX fhir_number_low_idx ON fhir_number (resource_type, param, low)');
  await knex.raw('CREATE INDEX fhir_number_high_idx ON fhir_number (resource_type, param, high)');
  await knex.raw('CREATE INDEX fhir_number_rid_idx ON fhir_number (rid, param)');

  await knex.raw(`
    CREATE TABLE fhir_reference (
      rid bigint NOT NULL, resource_type text NOT NULL, param text NOT NULL,
      target_type text, target_id text NOT NULL
    )`);
  await knex.raw('CREATE INDEX fhir_reference_target_idx ON fhir_reference (resource_type, param, target_id, target_type)');
  await knex.raw('CREATE INDEX fhir_reference_rid_idx ON fhir_reference (rid, param)');

  await knex.raw(`
    CREATE TABLE fhir_uri (
      rid bigint NOT NULL, resource_type text NOT NULL, param text NOT NULL,
      value text NOT NULL
    )`);
  await knex.raw('CREATE INDEX fhir_uri_value_idx ON fhir_uri (resource_type, param, value text_pattern_ops)');
  await knex.raw('CREATE INDEX fhir_uri_rid_idx ON fhir_uri (rid, param)');
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  for (const t of ['fhir_uri', 'fhir_reference', 'fhir_number', 'fhir_date', 'fhir_string', 'fhir_token', 'fhir_resource_history', 'fhir_resource']) {
    await knex.schema.dropTableIfExists(t);
  }
};
