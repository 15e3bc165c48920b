import knexFactory from 'knex';
import { searchesFewStudies } from '../../../src/auth/access-guard';
import { restrictStudiesToProjects, studyRestrictionFor } from '../../../src/auth/project-filters';

/** Compiles a study search narrowed by `restriction.onColumn` (no database: knex only builds the SQL). */
function restrictedSql(options: { fewStudies?: boolean; facility?: string }): { sql: string; bindings: readonly unknown[] } {
  const knex = knexFactory({ client: 'pg' });
  const q = knex('studies as st').select('st.study_uid').where('st.patient_id', 'P1');
  restrictStudiesToProjects(['p-a', 'p-b'], options).onColumn!(q, 'st.id');
  return q.toSQL().toNative();
}

describe('restrictStudiesToProjects', () => {
  test('by default the project filter is a plain EXISTS that the planner may turn into a semi-join', () => {
    const { sql, bindings } = restrictedSql({});
    expect(sql).toContain('EXISTS (SELECT 1 FROM project_studies ps WHERE ps.study_pk = "st"."id" AND ps.project_id = ANY($2::text[]))');
    expect(sql).not.toContain('OFFSET 0');
    expect(bindings).toEqual(['P1', ['p-a', 'p-b']]);
  });

  test('with fewStudies the EXISTS is fenced (OFFSET 0): one probe per matching study, no join planning', () => {
    const { sql, bindings } = restrictedSql({ fewStudies: true });
    expect(sql).toContain('EXISTS (SELECT 1 FROM project_studies ps WHERE ps.study_pk = "st"."id" AND ps.project_id = ANY($2::text[]) OFFSET 0)');
    expect(bindings).toEqual(['P1', ['p-a', 'p-b']]);
  });

  test('the facility form is fenced too', () => {
    const { sql, bindings } = restrictedSql({ fewStudies: true, facility: 'F1' });
    expect(sql).toContain('AND p.facility = $3 OFFSET 0)');
    expect(bindings).toEqual(['P1', ['p-a', 'p-b'], 'F1']);
  });

  test('studyRestrictionFor passes fewStudies on, and gives nothing for a decision over all rows', () => {
    expect(studyRestrictionFor({ rowFilter: { projects: 'all' } })).toBeUndefined();
    const knex = knexFactory({ client: 'pg' });
    const q = knex('studies as st').select('st.id');
    studyRestrictionFor({ rowFilter: { projects: ['p-a'] } }, { fewStudies: true })!.onColumn!(q, 'st.id');
    expect(q.toSQL().sql).toContain('OFFSET 0');
  });
});

describe('searchesFewStudies', () => {
  test.each([
    ['/dicomweb/studies', { PatientID: 'P0001234' }, true],
    ['/dicomweb/studies', { '00100020': 'P0001234', StudyDate: '20190301-20190330' }, true],
    ['/dicomweb/studies', { StudyInstanceUID: '1.2.3' }, true],
    ['/dicomweb/studies', { AccessionNumber: 'A1' }, true],
    ['/dicomweb/studies', { PatientID: ['P1', 'P2'] }, true],
    ['/dicomweb/studies', { PatientID: 'P*' }, false],
    ['/dicomweb/studies', { PatientID: 'P?01' }, false],
    ['/dicomweb/studies', { PatientID: '' }, false],
    ['/dicomweb/studies', { PatientID: ['P1', 'P*'] }, false],
    ['/dicomweb/studies', { StudyDate: '20190301-20190330' }, false],
    ['/dicomweb/studies', { PatientName: 'Kam', fuzzymatching: 'true' }, false],
    ['/dicomweb/studies', {}, false],
    ['/dicomweb/studies/1.2.3/series', { PatientID: 'P1' }, false],
    ['/dicomweb/series', { PatientID: 'P1' }, false],
  ])('%s %j -> %s', (path, query, expected) => {
    expect(searchesFewStudies(path, query)).toBe(expected);
  });
});
