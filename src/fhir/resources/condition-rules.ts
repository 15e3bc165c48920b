import type { Condition, OperationOutcomeIssue } from '@medplum/fhirtypes';
import { ICD10CM_SYSTEM, type Icd10cmCodeSet } from './icd10cm-codes';

/**
 * Condition rules beyond R4 structure: every `Condition.code.coding` in ICD-10-CM must name a
 * code of the configured code set (FHIR R4 terminology 4.1: a code must be valid in its system).
 * Category headers (`H47.01`) are valid codes and only draw a warning: they are not billable.
 */

/** SNOMED CT body sites of the eye, as Condition.bodySite codings (ophthalmology cohorts). */
export const EYE_BODY_SITES = {
  right: { system: 'http://snomed.info/sct', code: '18944008', display: 'Right eye structure' },
  left: { system: 'http://snomed.info/sct', code: '8966001', display: 'Left eye structure' },
  both: { system: 'http://snomed.info/sct', code: '40638003', display: 'Structure of both eyes' },
} as const;

/** Issues of a Condition's ICD-10-CM codings; `codes()` is only called when there is one to check. */
export function checkConditionCodes(condition: Condition, codes: () => Icd10cmCodeSet): OperationOutcomeIssue[] {
  const issues: OperationOutcomeIssue[] = [];
  (condition.code?.coding ?? []).forEach((coding, n) => {
    if (coding?.system !== ICD10CM_SYSTEM) return;
    const where = `Condition.code.coding[${n}].code`;
    const code = coding.code;
    if (typeof code !== 'string' || code === '') {
      issues.push(issue('error', 'required', `An ICD-10-CM coding needs a code`, where));
      return;
    }
    const set = codes();
    if (set.has(code)) {
      if (set.isHeader(code)) issues.push(issue('warning', 'business-rule', `ICD-10-CM ${code} is a category header, not a billable code`, where));
      return;
    }
    const dotted = set.suggest(code);
    const hint = dotted ? `; FHIR writes ICD-10-CM codes with the dot: ${dotted}` : '';
    issues.push(issue('error', 'code-invalid', `Unknown ICD-10-CM code '${code}' (FY2021 code set)${hint}`, where));
  });
  return issues;
}

function issue(severity: 'error' | 'warning', code: OperationOutcomeIssue['code'], text: string, where: string): OperationOutcomeIssue {
  return { severity, code, diagnostics: text, details: { text }, expression: [where] };
}
