import type { CapabilityStatement, CapabilityStatementRestResource } from '@medplum/fhirtypes';
import type { FhirDefinitions } from './definitions';
import { SERVER_WRITTEN_TYPES } from './interactions';

/** Interactions the router serves on every resource type (see fhir-router.ts). */
export const TYPE_INTERACTIONS = ['read', 'vread', 'update', 'delete', 'history-instance', 'history-type', 'create', 'search-type'] as const;
const WRITE_INTERACTIONS = new Set(['update', 'delete', 'create']);

const cache = new WeakMap<FhirDefinitions, CapabilityStatement>();

/** FHIR Bulk Data Access IG 2.0.0 (src/fhir/export): system, Patient and Group level `$export`. */
const BULK_DATA = 'http://hl7.org/fhir/uv/bulkdata';
const LEVEL_EXPORTS: Record<string, { name: string; definition: string }> = {
  Patient: { name: 'export', definition: `${BULK_DATA}/OperationDefinition/patient-export` },
  Group: { name: 'export', definition: `${BULK_DATA}/OperationDefinition/group-export` },
};

/**
 * The CapabilityStatement (FHIR R4 3.1.0.10) built from the template in fhir-profiles/ and what
 * the router actually serves: every R4 resource type with its interactions, search parameters
 * (standard and ours) and include paths. Built once per definitions object.
 */
export function buildCapabilityStatement(defs: FhirDefinitions, baseUrl: string): CapabilityStatement {
  let cs = cache.get(defs);
  if (!cs) {
    cs = generate(defs);
    cache.set(defs, cs);
  }
  return { ...cs, implementation: { ...(cs.implementation ?? { description: 'imaging-lake' }), url: baseUrl } };
}

function generate(defs: FhirDefinitions): CapabilityStatement {
  const template = structuredClone(defs.capabilityTemplate) as unknown as CapabilityStatement;
  const customProfiles = [...defs.profiles.values()];
  const resources: CapabilityStatementRestResource[] = [...defs.resourceTypes].sort().map((type) => {
    const params = [...defs.searchParams(type).values()].filter((p) => p.type !== 'composite' && p.type !== 'special' && (p.parsed || p.code === '_id' || p.code === '_lastUpdated'));
    const refParams = params.filter((p) => p.type === 'reference');
    const serverOnly = SERVER_WRITTEN_TYPES.has(type);
    const r: CapabilityStatementRestResource = {
      type: type as CapabilityStatementRestResource['type'],
      profile: `http://hl7.org/fhir/StructureDefinition/${type}`,
      interaction: TYPE_INTERACTIONS.filter((i) => !(serverOnly && WRITE_INTERACTIONS.has(i))).map((code) => ({ code })),
      versioning: 'versioned',
      readHistory: true,
      updateCreate: !serverOnly,
      conditionalCreate: !serverOnly,
      conditionalRead: 'not-supported',
      conditionalUpdate: !serverOnly,
      conditionalDelete: serverOnly ? 'not-supported' : 'single',
      searchInclude: ['*', ...refParams.map((p) => `${type}:${p.code}`)],
      searchParam: params
        .sort((a, b) => a.code.localeCompare(b.code))
        .map((p) => ({ name: p.code, ...(p.url ? { definition: p.url } : {}), type: p.type as 'string', ...(p.custom ? { documentation: 'imaging-lake SearchParameter (fhir-profiles/)' } : {}) })),
      operation: [{ name: 'validate', definition: 'http://hl7.org/fhir/OperationDefinition/Resource-validate' }, ...(LEVEL_EXPORTS[type] ? [LEVEL_EXPORTS[type]] : [])],
    };
    const supported = customProfiles.filter((p) => p.type === type).map((p) => p.url as string);
    if (supported.length) r.supportedProfile = supported;
    return r;
  });
  const rest = template.rest?.[0] ?? { mode: 'server' as const };
  template.rest = [{ ...rest, mode: 'server', resource: resources, operation: [...(rest.operation ?? []), { name: 'export', definition: `${BULK_DATA}/OperationDefinition/export` }] }];
  template.instantiates = [...new Set([...(template.instantiates ?? []), `${BULK_DATA}/CapabilityStatement/bulk-data`])];
  template.fhirVersion = '4.0.1';
  template.format = ['json'];
  return template;
}
