import type { OperationOutcome, Parameters, Resource } from '@medplum/fhirtypes';
import type { FhirContext, FhirRequest, FhirResponse } from './http/fhir-request';
import { badRequest, gone, notFound } from './outcome';
import { readCurrent } from './store/resource-store';
import { assertResourceShape, collectValidationIssues } from './validation';
import { defaultResourceRules } from './resources/resource-rules';

/**
 * `$validate` (FHIR R4 Resource-validate) at type and instance level: 200 with an
 * OperationOutcome listing the issues (an "All OK" information issue when there are none);
 * 400 only when no resource could be found in the request.
 */
export async function validateOperation(ctx: FhirContext, req: FhirRequest, resourceType: string, id?: string): Promise<FhirResponse> {
  let candidate: unknown = req.body;
  if (candidate && (candidate as Resource).resourceType === 'Parameters') {
    candidate = (candidate as Parameters).parameter?.find((p) => p.name === 'resource')?.resource;
  }
  if (candidate === undefined && id) {
    const stored = await readCurrent(ctx.db, resourceType, id, { access: ctx.access });
    if (!stored) throw notFound(`${resourceType}/${id} not found`);
    if (stored.deleted) throw gone(`${resourceType}/${id} was deleted`);
    candidate = stored.content;
  }
  if (candidate === undefined) throw badRequest('$validate needs a resource in the body (or a Parameters with a resource parameter)');
  const resource = assertResourceShape(ctx.defs, candidate, resourceType);
  const issues = [...collectValidationIssues(ctx.defs, resource), ...(ctx.resourceRules ?? defaultResourceRules()).check(resource)];
  if (id && resource.id && resource.id !== id) issues.push({ severity: 'error', code: 'invalid', diagnostics: `id ${resource.id} does not match ${id}`, expression: [`${resourceType}.id`] });
  const body: OperationOutcome = {
    resourceType: 'OperationOutcome',
    issue: issues.length ? issues : [{ severity: 'information', code: 'informational', diagnostics: 'All OK', details: { text: 'All OK' } }],
  };
  return { status: 200, headers: {}, body };
}
