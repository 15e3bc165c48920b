import { loadFhirDefinitions } from '../../../src/fhir/definitions';
import { MIN_PARALLEL_BATCH, startValidation, validateResources } from '../../../src/fhir/validation-pool';

const defs = loadFhirDefinitions();
/** Patients of which every seventh has an invalid birthDate. */
const patients = (n: number) =>
  Array.from({ length: n }, (_, i) => ({ resourceType: 'Patient', id: `p${i}`, birthDate: i % 7 === 0 ? `19${i}-99-99` : '1970-01-01' }) as any);
const invalidAt = (issues: unknown[][]) => issues.flatMap((x, i) => (x.length > 0 ? [i] : []));
const expected = (n: number) => Array.from({ length: n }, (_, i) => i).filter((i) => i % 7 === 0);

describe('validation of a batch on worker threads', () => {
  test('the issues come back in input order when the workers do all the work', async () => {
    const issues = await startValidation(defs, patients(100)).done;
    expect(issues).toHaveLength(100);
    expect(invalidAt(issues)).toEqual(expected(100));
    expect(issues[7][0].expression).toEqual(['Patient.birthDate']);
  }, 60_000);

  test('the issues come back in input order when this thread shares the work', async () => {
    const job = startValidation(defs, patients(150));
    job.helpHere();
    expect(invalidAt(await job.done)).toEqual(expected(150));
  }, 60_000);

  test('concurrent batches each get their own issues', async () => {
    const [a, b] = await Promise.all([validateResources(defs, patients(90)), startValidation(defs, patients(70).reverse()).done]);
    expect(invalidAt(a)).toEqual(expected(90));
    expect(invalidAt(b)).toEqual(expected(70).map((i) => 69 - i).reverse());
  }, 60_000);

  test('a small batch is validated at once', async () => {
    const job = startValidation(defs, patients(MIN_PARALLEL_BATCH - 1));
    expect(invalidAt(await job.done)).toEqual(expected(MIN_PARALLEL_BATCH - 1));
  });
});

// Last in this file: a failed hand-over leaves the pool on this thread for the rest of the process.
describe('validation when a chunk cannot go to a worker', () => {
  test('the chunk is validated here and every resource still gets its issues', async () => {
    await startValidation(defs, patients(MIN_PARALLEL_BATCH)).done; // the workers are up: the first chunk goes to one
    const batch = patients(100);
    batch[3] = { ...batch[3], notAnElement: () => 1 };
    const job = startValidation(defs, batch);
    job.helpHere();
    const issues = await job.done;
    expect(issues).toHaveLength(100);
    expect(invalidAt(issues)).toEqual([...expected(100), 3].sort((a, b) => a - b));
    expect(issues[3].some((i) => i.severity === 'error')).toBe(true);
  }, 60_000);
});
