import knexFactory from 'knex';
import { datePageQuery, datePageStatement } from '../../../src/db/qido-search';
import { prepareSearch } from '../../../src/dicomweb/qido-rs';

/**
 * The study list by date's SQL is compiled by knex once per shape of search; its bindings are laid
 * out by datePageStatement. Both must stay what knex compiles for the search itself.
 */
const knex = knexFactory({ client: 'pg' });
const searchOf = (query: Record<string, unknown>) => prepareSearch('study', { query, dicomwebBaseUrl: 'http://h/dicomweb' }).search;

/** Pairs of searches of one shape with different values (the second one is answered from the kept text). */
const SHAPES: Array<[Record<string, unknown>, Record<string, unknown>]> = [
  [{}, { limit: '7' }],
  [{ StudyDate: '20190303' }, { StudyDate: '20200101' }],
  [{ StudyDate: '20190305-' }, { StudyDate: '20100101-' }],
  [{ StudyDate: '-20190302' }, { StudyDate: '-20220202' }],
  [{ StudyDate: '20190301-20190331' }, { StudyDate: '20200101-20200130', limit: '100' }],
  [{ StudyDate: '20190301-20190331', offset: '2', limit: '3' }, { StudyDate: '20200101-20200130', offset: '1000', limit: '10' }],
];

describe('the SQL of a study page by date', () => {
  afterAll(() => knex.destroy());

  test.each(SHAPES)('%j and a search of its shape with other values get the text and bindings knex compiles for them', (first, second) => {
    for (const query of [first, second, first]) {
      const search = searchOf(query);
      for (const columns of ['texts', 'versions'] as const) {
        expect(datePageStatement(knex, search, columns)).toEqual(pick(datePageQuery(knex, search, columns).toSQL()));
      }
    }
  });

  test('the keys and the texts of some ids bind the page values, then the ids', () => {
    const search = searchOf({ StudyDate: '20190301-20190331', offset: '4', limit: '5' });
    for (let round = 0; round < 2; round++) {
      expect(datePageStatement(knex, search, 'keys').bindings).toEqual(['2019-03-01', '2019-03-31', 10, '2019-03-01', '2019-03-31', 10, 6, 4]);
      const ids = ['7', '9'];
      const { sql, bindings } = datePageStatement(knex, search, 'textsOf', [ids]);
      expect(sql).toContain('unnest(?::bigint[]) AS wanted(id)');
      expect(bindings).toEqual(['2019-03-01', '2019-03-31', 10, '2019-03-01', '2019-03-31', 10, 6, 4, ids]);
    }
  });
});

function pick(compiled: { sql: string; bindings: readonly unknown[] }) {
  return { sql: compiled.sql, bindings: [...compiled.bindings] };
}
