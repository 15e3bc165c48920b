import type { Knex } from 'knex';

/**
 * Fills the FHIR store with `n` synthetic Patients and `n` Observations straight in SQL
 * (INSERT ... SELECT generate_series), with the index rows the writer would produce for the
 * parameters the EXPLAIN test searches on. Seconds for 50k, where the HTTP path takes minutes.
 */
export async function generateFhirRows(knex: Knex, n: number): Promise<void> {
  await knex.raw(`
    INSERT INTO fhir_resource (resource_type, id, version_id, last_updated, deleted, content)
    SELECT 'Patient', 'gp-' || g, 1, timestamptz '2024-01-01' + g * interval '1 minute', false,
           jsonb_build_object('resourceType', 'Patient', 'id', 'gp-' || g, 'gender', CASE WHEN g % 2 = 0 THEN 'male' ELSE 'female' END,
                              'name', jsonb_build_array(jsonb_build_object('family', 'Fam' || (g % 5000), 'given', jsonb_build_array('Giv' || g))),
                              'identifier', jsonb_build_array(jsonb_build_object('system', 'urn:gen', 'value', 'MRN' || g)),
                              'birthDate', to_char(date '1930-01-01' + (g % 30000), 'YYYY-MM-DD'))
    FROM generate_series(1, ?) AS g`, [n]);
  await knex.raw(`
    INSERT INTO fhir_resource (resource_type, id, version_id, last_updated, deleted, content)
    SELECT 'Observation', 'go-' || g, 1, timestamptz '2024-01-01' + g * interval '1 minute', false,
           jsonb_build_object('resourceType', 'Observation', 'id', 'go-' || g, 'status', 'final',
                              'code', jsonb_build_object('coding', jsonb_build_array(jsonb_build_object('system', 'http://loinc.org', 'code', 'L' || (g % 200)))),
                              'subject', jsonb_build_object('reference', 'Patient/gp-' || g),
                              'valueQuantity', jsonb_build_object('value', g % 1000, 'system', 'http://unitsofmeasure.org', 'code', 'mg'))
    FROM generate_series(1, ?) AS g`, [n]);
  const p = `FROM fhir_resource r WHERE r.resource_type = 'Patient' AND r.id LIKE 'gp-%'`;
  const o = `FROM fhir_resource r WHERE r.resource_type = 'Observation' AND r.id LIKE 'go-%'`;
  const pWith = (join: string) => `FROM fhir_resource r, ${join} WHERE r.resource_type = 'Patient' AND r.id LIKE 'gp-%'`;
  const oWith = (join: string) => `FROM fhir_resource r, ${join} WHERE r.resource_type = 'Observation' AND r.id LIKE 'go-%'`;
  await knex.raw(`INSERT INTO fhir_token (rid, resource_type, param, system, code, text) SELECT rid, 'Patient', 'identifier', 'urn:gen', content->'identifier'->0->>'value', NULL ${p}`);
  await knex.raw(`INSERT INTO fhir_token (rid, resource_type, param, system, code, text) SELECT rid, 'Patient', 'gender', NULL, content->>'gender', NULL ${p}`);
  await knex.raw(`INSERT INTO fhir_string (rid, resource_type, param, value, exact) SELECT rid, 'Patient', 'family', lower(content->'name'->0->>'family'), content->'name'->0->>'family' ${p}`);
  await knex.raw(`INSERT INTO fhir_string (rid, resource_type, param, value, exact) SELECT rid, 'Patient', 'name', lower(x), x ${pWith(`LATERAL (VALUES (content->'name'->0->>'family'), (content->'name'->0->'given'->>0)) AS v(x)`)}`);
  await knex.raw(`INSERT INTO fhir_date (rid, resource_type, param, low, high) SELECT rid, 'Patient', 'birthdate', (content->>'birthDate')::date, (content->>'birthDate')::date + 1 ${p}`);
  await knex.raw(`INSERT INTO fhir_token (rid, resource_type, param, system, code, text) SELECT rid, 'Observation', 'code', 'http://loinc.org', content->'code'->'coding'->0->>'code', 'test ' || (content->'code'->'coding'->0->>'code') ${o}`);
  await knex.raw(`INSERT INTO fhir_token (rid, resource_type, param, system, code, text) SELECT rid, 'Observation', 'status', NULL, 'final', NULL ${o}`);
  await knex.raw(`INSERT INTO fhir_reference (rid, resource_type, param, target_type, target_id) SELECT rid, 'Observation', p, 'Patient', substr(content->'subject'->>'reference', 9) ${oWith(`(VALUES ('subject'), ('patient')) AS v(p)`)}`);
  await knex.raw(`INSERT INTO fhir_number (rid, resource_type, param, low, high, system, code) SELECT rid, 'Observation', 'value-quantity', (content->'valueQuantity'->>'value')::numeric, (content->'valueQuantity'->>'value')::numeric, 'http://unitsofmeasure.org', 'mg' ${o}`);
  await knex.raw(`INSERT INTO fhir_uri (rid, resource_type, param, value) SELECT rid, 'Observation', '_profile', 'http://example.org/profile/' || (rid % 50) ${o}`);
  await knex.raw('ANALYZE');
}
