/**
 * QIDO-RS study results, written ahead (issue 3): `studies.qido_json` holds the DICOM JSON
 * text (PS3.18 F.2) of a study's default return attributes (PS3.18 Table 10.6.3-3, as
 * dicomweb/query-keys.json lists them): the stored attributes, zero-length when absent, and
 * the values computed from the row (InstanceAvailability, ModalitiesInStudy, the counts).
 * RetrieveURL depends on the request's base URL, so the text carries it as `{"vr": "UR"}` and
 * the server fills it in. A search for studies then sends these texts as they are, instead of
 * cutting and re-encoding each dataset per request (src/db/qido-search.ts).
 *
 * A BEFORE INSERT / UPDATE trigger keeps the text in step with the row, whoever writes it
 * (ingest, deletes, bulk loads), reading the same columns the answer would read. Fast on a
 * large table: a nullable column with no default and a trigger are catalogue changes only;
 * rows written before this migration keep NULL and are answered by the same expression at
 * query time (exact, slower) until they are next written.
 *
 * The list of attributes is fixed here, as migrations are history: the server uses the column
 * only when its default study attributes are exactly these (see STUDY_DEFAULTS_TEXT_TAGS).
 */

/** Stored default study attributes and their VRs (zero-length when the study lacks them). */
const STORED = {
  '00080005': 'CS',
  '00080020': 'DA',
  '00080030': 'TM',
  '00080050': 'SH',
  '00080090': 'PN',
  '00080201': 'SH',
  '00081030': 'LO',
  '00100010': 'PN',
  '00100020': 'LO',
  '00100030': 'DA',
  '00100040': 'CS',
  '0020000D': 'UI',
  '00200010': 'SH',
};

const EMPTY = JSON.stringify(Object.fromEntries(Object.entries(STORED).map(([tag, vr]) => [tag, { vr }])));
const KEYS = `{${Object.keys(STORED).join(',')}}`;

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.raw('ALTER TABLE studies ADD COLUMN qido_json text');
  await knex.raw(`CREATE FUNCTION studies_qido_json() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  NEW.qido_json := ('${EMPTY}'::jsonb
    || coalesce((SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(NEW.dataset) e WHERE e.key = ANY ('${KEYS}'::text[])), '{}'::jsonb)
    || jsonb_build_object(
      '00080056', '{"vr": "CS", "Value": ["ONLINE"]}'::jsonb,
      '00080061', CASE WHEN cardinality(NEW.modalities) > 0 THEN jsonb_build_object('vr', 'CS', 'Value', to_jsonb(NEW.modalities)) ELSE '{"vr": "CS"}'::jsonb END,
      '00081190', '{"vr": "UR"}'::jsonb,
      '00201206', jsonb_build_object('vr', 'IS', 'Value', jsonb_build_array(NEW.num_series)),
      '00201208', jsonb_build_object('vr', 'IS', 'Value', jsonb_build_array(NEW.num_instances))))::text;
  RETURN NEW;
END
$fn$`);
  await knex.raw(`CREATE TRIGGER studies_qido_json BEFORE INSERT OR UPDATE OF dataset, modalities, num_series, num_instances, qido_json
    ON studies FOR EACH ROW EXECUTE FUNCTION studies_qido_json()`);
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex.raw('DROP TRIGGER IF EXISTS studies_qido_json ON studies');
  await knex.raw('DROP FUNCTION IF EXISTS studies_qido_json()');
  await knex.raw('ALTER TABLE studies DROP COLUMN IF EXISTS qido_json');
};
