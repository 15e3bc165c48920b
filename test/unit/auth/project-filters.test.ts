import knexFactory from 'knex';
import { restrictStudiesToProjects, studyRestrictionFor } from '../../../src/auth/project-filters';
import { buildQidoQuery } from '../../../src/db/qido-search';
import { prepareSearch } from '../../../src/dicomweb/qido-rs';

/** Compiles a study search narrowed by `restriction.onColumn` (no database: knex only builds the SQL). */
function restrictedSql(options: { fewStudies?: boolean; facility?: string }): { sql: string; bindings: readonly unknown[] } {
  const knex = knexFactory({ client: 'pg' });
  const q = knex('studies as st').select('st.study_uid').where('st.patient_id', 'P1');
  restrictStudiesToProjects(['p-a', 'p-b'], { facility: options.facility }).onColumn!(q, 'st.id', { fewStudies: options.fewStudies });
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

  test('studyRestrictionFor gives the projects filter, and nothing for a decision over all rows', () => {
    expect(studyRestrictionFor({ rowFilter: { projects: 'all' } })).toBeUndefined();
    const knex = knexFactory({ client: 'pg' });
    const q = knex('studies as st').select('st.id');
    studyRestrictionFor({ rowFilter: { projects: ['p-a'], facility: 'F1' } })!.onColumn!(q, 'st.id');
    expect(q.toSQL().toNative()).toEqual({ sql: expect.stringContaining('AND p.facility = $2)'), bindings: [['p-a'], 'F1'] });
  });
});

describe('QIDO-RS searches choose the fenced project filter when they name a handful of studies', () => {
  const restrictStudies = restrictStudiesToProjects(['p-a']);
  const fenced = (level: 'study' | 'series' | 'instance', query: Record<string, string | string[]>, studyInstanceUID?: string) => {
    const { search } = prepareSearch(level, { query, studyInstanceUID, dicomwebBaseUrl: 'http://h/dicomweb' }, { restrictStudies });
    const sql = buildQidoQuery(knexFactory({ client: 'pg' }), search).toSQL().sql;
    expect(sql).toContain('FROM project_studies ps');
    return sql.includes('OFFSET 0');
  };

  test.each([
    [{ PatientID: 'P0001234' }, true],
    [{ '00100020': 'P0001234', StudyDate: '20190301-20190330' }, true],
    [{ StudyInstanceUID: '1.2.3' }, true],
    [{ StudyInstanceUID: '1.2.3,1.2.4' }, true],
    [{ AccessionNumber: 'A1' }, true],
    [{ PatientID: 'P*' }, false],
    [{ PatientID: 'P?01' }, false],
    [{ PatientID: '' }, false],
    [{ StudyDate: '20190301-20190330' }, false],
    [{ PatientName: 'Kam', fuzzymatching: 'true' }, false],
    [{}, false],
  ])('/studies %j -> %s', (query, expected) => {
    expect(fenced('study', query)).toBe(expected);
  });

  test('series of one study and instances of a patient are fenced; a modality search is not', () => {
    expect(fenced('series', {}, '1.2.3')).toBe(true);
    expect(fenced('instance', { PatientID: 'P1' })).toBe(true);
    expect(fenced('series', { Modality: 'CT' })).toBe(false);
  });
});
