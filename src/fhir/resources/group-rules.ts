import type { Group, OperationOutcomeIssue } from '@medplum/fhirtypes';

/**
 * Group rules beyond R4 structure (grp-1, members only on an actual group, is checked by the
 * validator): each member must be of the kind the group's `type` says (FHIR R4 Group.type,
 * value set group-type: person and animal groups hold Patients, practitioner groups
 * Practitioners or PractitionerRoles, ...). Cohorts defined by `characteristic` are stored as
 * they are.
 */
const MEMBER_TYPES: Record<string, readonly string[]> = {
  person: ['Patient'],
  animal: ['Patient'],
  practitioner: ['Practitioner', 'PractitionerRole'],
  device: ['Device'],
  medication: ['Medication'],
  substance: ['Substance'],
};

/** The resource type a reference names ('Patient/1', 'https://x/fhir/Patient/1', reference.type), if any. */
export function referencedType(ref: { reference?: string; type?: string } | undefined): string | undefined {
  if (!ref) return undefined;
  const m = ref.reference ? /(?:^|\/)([A-Z][A-Za-z]+)\/[A-Za-z0-9\-.]{1,64}(?:\/_history\/[A-Za-z0-9\-.]+)?$/.exec(ref.reference) : null;
  return m?.[1] ?? ref.type;
}

/** Issues of a Group whose members do not match its type. */
export function checkGroupMembers(group: Group): OperationOutcomeIssue[] {
  const allowed = group.type ? MEMBER_TYPES[group.type] : undefined;
  if (!allowed) return [];
  const issues: OperationOutcomeIssue[] = [];
  (group.member ?? []).forEach((member, n) => {
    const type = referencedType(member?.entity);
    if (type === undefined || allowed.includes(type)) return;
    const text = `A ${group.type} Group holds ${allowed.join(' or ')} members, not ${type}`;
    issues.push({ severity: 'error', code: 'business-rule', diagnostics: text, details: { text }, expression: [`Group.member[${n}].entity`] });
  });
  return issues;
}
