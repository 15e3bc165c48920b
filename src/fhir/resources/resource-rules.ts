import type { Condition, Group, OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import { OperationOutcomeError } from '../outcome';
import { checkConditionCodes } from './condition-rules';
import { checkGroupMembers } from './group-rules';
import { DEFAULT_ICD10CM_CODES_PATH, loadIcd10cmCodes, type Icd10cmCodeSet } from './icd10cm-codes';

/**
 * Per-resource-type rules the R4 StructureDefinitions cannot express (terminology bindings we
 * enforce, member kinds), applied on create, update, in transaction and batch Bundles and by
 * `$validate`. They run on the main thread after R4 validation, so the code sets live once per
 * process rather than once per validation worker.
 */
export interface ResourceRules {
  /** Issues of one resource (errors make a write 422); [] for types without rules. */
  check(resource: Resource): OperationOutcomeIssue[];
}

/** Where the rules' terminology comes from. */
export interface ResourceRulesOptions {
  /** ICD-10-CM code list (config ICD10CM_CODES_PATH); default: the copy in fhir-profiles/terminology/. */
  icd10cmCodesPath?: string;
}

/** Builds the rules and loads their code lists now, so a bad path fails at start-up. */
export function createResourceRules(options: ResourceRulesOptions = {}): ResourceRules {
  const codes = loadIcd10cmCodes(options.icd10cmCodesPath ?? DEFAULT_ICD10CM_CODES_PATH);
  return rulesWith(() => codes);
}

function rulesWith(codes: () => Icd10cmCodeSet): ResourceRules {
  return {
    check(resource) {
      switch (resource.resourceType) {
        case 'Condition':
          return checkConditionCodes(resource as Condition, codes);
        case 'Group':
          return checkGroupMembers(resource as Group);
        default:
          return [];
      }
    },
  };
}

let fallback: ResourceRules | undefined;

/**
 * The rules over the shipped code list, for a router composed without explicit rules (tests,
 * tools): the list is read on the first Condition that carries an ICD-10-CM coding.
 */
export function defaultResourceRules(): ResourceRules {
  fallback ??= rulesWith(() => loadIcd10cmCodes(DEFAULT_ICD10CM_CODES_PATH));
  return fallback;
}

/** True when an issue list holds an error (or fatal) issue. */
export function hasErrors(issues: readonly OperationOutcomeIssue[]): boolean {
  return issues.some((i) => i.severity === 'error' || i.severity === 'fatal');
}

/** Throws 422 with an OperationOutcome of every issue when the rules find an error in `resource`. */
export function assertResourceRules(rules: ResourceRules | undefined, resource: Resource): void {
  const issues = (rules ?? defaultResourceRules()).check(resource);
  if (hasErrors(issues)) throw new OperationOutcomeError(422, { resourceType: 'OperationOutcome', issue: issues });
}
