import { parseArgs } from 'node:util';

/** The parts of a CapabilityStatement the document must keep true: per resource type, what is served. */
export interface CapabilitySurface {
  /** Server-level interactions (e.g. transaction, batch, history-system, search-system). */
  system: string[];
  /** resource type -> sorted interactions, sorted "name:type" search parameters and operations. */
  resources: Record<string, { interactions: string[]; searchParams: string[]; operations: string[] }>;
}

interface CapabilityLike {
  rest?: {
    interaction?: { code: string }[];
    resource?: { type: string; interaction?: { code: string }[]; searchParam?: { name: string; type: string }[]; operation?: { name: string }[] }[];
  }[];
}

/** Reduces a CapabilityStatement (FHIR R4 3.1.0.10) to its served resources, interactions and search parameters. */
export function capabilitySurface(cs: CapabilityLike): CapabilitySurface {
  const rest = cs.rest?.[0] ?? {};
  const resources: CapabilitySurface['resources'] = {};
  for (const r of rest.resource ?? []) {
    resources[r.type] = {
      interactions: (r.interaction ?? []).map((i) => i.code).sort(),
      searchParams: (r.searchParam ?? []).map((p) => `${p.name}:${p.type}`).sort(),
      operations: (r.operation ?? []).map((o) => o.name).sort(),
    };
  }
  return { system: (rest.interaction ?? []).map((i) => i.code).sort(), resources };
}

/** Lists how `served` differs from `documented`, one line per difference; empty when they agree. */
export function diffCapabilitySurface(documented: CapabilitySurface, served: CapabilitySurface): string[] {
  const out: string[] = [];
  const sets = (label: string, doc: string[], srv: string[]) => {
    for (const x of srv) if (!doc.includes(x)) out.push(`${label}: served but not documented: ${x}`);
    for (const x of doc) if (!srv.includes(x)) out.push(`${label}: documented but not served: ${x}`);
  };
  sets('system interactions', documented.system, served.system);
  sets('resource types', Object.keys(documented.resources), Object.keys(served.resources));
  for (const [type, srv] of Object.entries(served.resources)) {
    const doc = documented.resources[type];
    if (!doc) continue;
    sets(`${type} interactions`, doc.interactions, srv.interactions);
    sets(`${type} search parameters`, doc.searchParams, srv.searchParams);
    sets(`${type} operations`, doc.operations, srv.operations);
  }
  return out;
}

/** The CapabilityStatement as a document: the base URL replaced by the default one so it does not depend on where it was fetched. */
export function toDocument(cs: Record<string, unknown>): Record<string, unknown> {
  const doc = structuredClone(cs);
  const impl = doc.implementation as { url?: string } | undefined;
  if (impl?.url) impl.url = 'http://127.0.0.1:8080/fhir';
  return doc;
}

/** `tsx conformance/kit/capability-document.ts --base-url URL [--token T]`: prints the served statement as the document. */
async function main(): Promise<void> {
  const { values } = parseArgs({ args: process.argv.slice(2), options: { 'base-url': { type: 'string' }, token: { type: 'string' }, 'fhir-path': { type: 'string', default: '/fhir' } } });
  if (!values['base-url']) throw new Error('usage: tsx conformance/kit/capability-document.ts --base-url URL [--token T] [--fhir-path /fhir] > conformance/fhir-capability-statement.json');
  const res = await fetch(`${values['base-url'].replace(/\/+$/, '')}${values['fhir-path']}/metadata`, {
    headers: { accept: 'application/fhir+json', ...(values.token ? { authorization: `Bearer ${values.token}` } : {}) },
  });
  if (res.status !== 200) throw new Error(`GET metadata: status ${res.status}`);
  process.stdout.write(`${JSON.stringify(toDocument((await res.json()) as Record<string, unknown>), null, 2)}\n`);
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
