import { createHash } from 'node:crypto';
import { getAllDataTypes, OperationOutcomeError as MedplumOutcomeError, parseStructureDefinition, validateResource, validateTypedValue } from '@medplum/core';
import type { OperationOutcomeIssue, Resource, StructureDefinition } from '@medplum/fhirtypes';
import type { FhirDefinitions } from './definitions';
import { badRequest, OperationOutcomeError } from './outcome';

/** Logical id syntax (FHIR R4 datatypes 2.24.0.1 id). */
export const ID_PATTERN = /^[A-Za-z0-9\-.]{1,64}$/;

/**
 * Checks the basic shape every write needs: a JSON object with a known resourceType (400 when
 * not: the body cannot be a resource at all).
 */
export function assertResourceShape(defs: FhirDefinitions, body: unknown, expectedType?: string): Resource {
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw badRequest('The request body must be a FHIR resource (a JSON object)');
  const rt = (body as { resourceType?: unknown }).resourceType;
  if (typeof rt !== 'string') throw badRequest('The resource has no resourceType', ['resourceType']);
  if (expectedType && rt !== expectedType) throw badRequest(`resourceType ${rt} does not match the URL (${expectedType})`, ['resourceType']);
  if (!defs.resourceTypes.has(rt)) throw badRequest(`Unknown resource type ${rt}`, ['resourceType']);
  const id = (body as { id?: unknown }).id;
  if (id !== undefined && (typeof id !== 'string' || !ID_PATTERN.test(id))) throw badRequest(`Invalid id ${String(id)}`, [`${rt}.id`]);
  return body as Resource;
}

/**
 * Loads the StructureDefinitions of a resource's type and of every resource nested in it. In R4
 * only elements of type Resource can hold one: DomainResource.contained, Bundle.entry.resource,
 * Bundle.entry.response.outcome and Parameters.parameter(.part).resource, so only those are
 * followed (walking every element of every resource cost ~3% of an ingest).
 */
function loadNestedTypes(defs: FhirDefinitions, value: unknown, depth = 0): void {
  if (!value || typeof value !== 'object' || Array.isArray(value) || depth > 12) return;
  const r = value as Record<string, any>;
  const rt = r.resourceType;
  if (typeof rt !== 'string' || !defs.resourceTypes.has(rt)) return;
  defs.ensureTypeLoaded(rt);
  const each = (list: unknown, visit: (x: any) => void) => Array.isArray(list) && list.forEach((x) => x && typeof x === 'object' && visit(x));
  each(r.contained, (c) => loadNestedTypes(defs, c, depth + 1));
  if (rt === 'Bundle') {
    each(r.entry, (e) => {
      loadNestedTypes(defs, e.resource, depth + 1);
      loadNestedTypes(defs, e.response?.outcome, depth + 1);
    });
  } else if (rt === 'Parameters') {
    const visitParameter = (p: any) => {
      loadNestedTypes(defs, p.resource, depth + 1);
      each(p.part, visitParameter);
    };
    each(r.parameter, visitParameter);
  }
}

/**
 * Parsed profiles, registered with the validator under a key of their own. medplum's
 * validateResource(resource, { profile }) parses the profile's StructureDefinition on every call
 * (~8 ms for our ImagingStudy profile, more than validating the resource itself), so each profile
 * is parsed once per content: the key carries the canonical URL, version and a hash of the JSON,
 * and a changed StructureDefinition (new definitions, an edited fhir-profiles/ file) replaces the
 * entry of its URL. Validating a value whose type is that key runs the same validator on the
 * same parsed schema.
 */
const profileKeys = new WeakMap<StructureDefinition, string>();
const keyByUrl = new Map<string, string>();

/** The validator type key of a profile, parsing and registering the profile on first use. */
export function profileTypeKey(profile: StructureDefinition): string {
  let key = profileKeys.get(profile);
  if (key) return key;
  const digest = createHash('sha256').update(JSON.stringify(profile)).digest('hex').slice(0, 16);
  key = `profile:${profile.url ?? profile.id ?? ''}|${profile.version ?? ''}|${digest}`;
  const types = getAllDataTypes();
  if (!types[key]) types[key] = parseStructureDefinition(profile);
  const url = profile.url ?? key;
  const previous = keyByUrl.get(url);
  if (previous && previous !== key) delete types[previous];
  keyByUrl.set(url, key);
  profileKeys.set(profile, key);
  return key;
}

/**
 * Validates a resource against the R4 StructureDefinition of its type and against any of our own
 * profiles (fhir-profiles/) it claims in meta.profile. Returns all issues, errors and warnings.
 */
export function collectValidationIssues(defs: FhirDefinitions, resource: Resource): OperationOutcomeIssue[] {
  loadNestedTypes(defs, resource);
  const issues: OperationOutcomeIssue[] = [];
  const run = (validate: () => OperationOutcomeIssue[]) => {
    try {
      issues.push(...validate());
    } catch (err) {
      if (err instanceof MedplumOutcomeError) issues.push(...(err.outcome.issue ?? []));
      else issues.push({ severity: 'error', code: 'processing', diagnostics: String((err as Error)?.message ?? err) });
    }
  };
  run(() => validateResource(resource));
  for (const url of resource.meta?.profile ?? []) {
    const profile = defs.profiles.get(url);
    if (profile) run(() => validateTypedValue({ type: profileTypeKey(profile), value: resource }));
  }
  return issues.map(withDiagnostics);
}

function withDiagnostics(issue: OperationOutcomeIssue): OperationOutcomeIssue {
  if (issue.diagnostics || !issue.details?.text) return issue;
  const where = issue.expression?.[0];
  return { ...issue, diagnostics: where ? `${issue.details.text} (${where})` : issue.details.text };
}

/** Throws 422 with an OperationOutcome naming each offending element when the resource is invalid. */
export function assertValidResource(defs: FhirDefinitions, resource: Resource): void {
  const issues = collectValidationIssues(defs, resource);
  if (issues.some((i) => i.severity === 'error' || i.severity === 'fatal')) {
    throw new OperationOutcomeError(422, { resourceType: 'OperationOutcome', issue: issues });
  }
}
