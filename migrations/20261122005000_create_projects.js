/**
 * Projects: the unit of row-level access. A study belongs to one or more projects (many to
 * many: its files are stored once); FHIR resources are linked the same way through
 * project_resources. Members carry their role within the project.
 */

/** @param {import('knex').Knex} knex */
exports.up = async function up(knex) {
  await knex.schema.createTable('projects', (t) => {
    t.text('id').primary();
    t.text('name').notNullable();
    t.text('facility');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['facility']);
  });
  await knex.schema.createTable('project_members', (t) => {
    t.text('project_id').notNullable().references('projects.id').onDelete('CASCADE');
    t.text('subject').notNullable();
    t.text('role').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['project_id', 'subject']);
    t.index(['subject']);
  });
  await knex.raw(`ALTER TABLE project_members ADD CONSTRAINT project_members_role_check
    CHECK (role IN ('admin', 'data-manager', 'researcher', 'pi'))`);
  await knex.schema.createTable('project_studies', (t) => {
    t.text('project_id').notNullable().references('projects.id').onDelete('CASCADE');
    t.bigInteger('study_pk').notNullable().references('studies.id').onDelete('CASCADE');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['project_id', 'study_pk']);
    // The row filter is `EXISTS (... WHERE study_pk = studies.id AND project_id IN (...))`.
    t.index(['study_pk', 'project_id']);
  });
  await knex.schema.createTable('project_resources', (t) => {
    t.text('project_id').notNullable().references('projects.id').onDelete('CASCADE');
    t.text('resource_type').notNullable();
    t.text('resource_id').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['project_id', 'resource_type', 'resource_id']);
    t.index(['resource_type', 'resource_id', 'project_id']);
  });
};

/** @param {import('knex').Knex} knex */
exports.down = async function down(knex) {
  await knex.schema.dropTableIfExists('project_resources');
  await knex.schema.dropTableIfExists('project_studies');
  await knex.schema.dropTableIfExists('project_members');
  await knex.schema.dropTableIfExists('projects');
};
