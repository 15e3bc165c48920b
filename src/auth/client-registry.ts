/**
 * OAuth client registrations for SMART Backend Services: who the client is, how its keys are
 * found (a JWKS by value or a JWKS URL), which scopes it may be granted, its role and projects.
 * `registerClient` is what `imaging-lake client add` calls.
 */
import { randomUUID } from 'node:crypto';
import { importJWK, type JWK } from 'jose';
import type { Knex } from 'knex';
import { isRole, type Role } from './roles';
import { parseScope } from './scopes';

/** A stored client registration. */
export interface ClientRegistration {
  clientId: string;
  name: string;
  jwks?: { keys: JWK[] };
  jwksUri?: string;
  /** Scopes the client may be granted (SMART v2 strings, usually `system/...`). */
  scopes: string[];
  role: Role;
  projects: string[];
  facility?: string;
  enabled: boolean;
}

/** What registering a client takes; `clientId` defaults to a random UUID. */
export interface ClientRegistrationInput {
  clientId?: string;
  name: string;
  jwks?: { keys: JWK[] };
  jwksUri?: string;
  scopes: string[];
  role: Role;
  projects?: string[];
  facility?: string;
}

/** A registration that cannot be stored, with a message meant for the operator. */
export class ClientRegistrationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ClientRegistrationError';
  }
}

const CLIENT_ID_RE = /^[\w.:@-]{1,128}$/;
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'];

/** Validates and stores a client registration; throws ClientRegistrationError. */
export async function registerClient(knex: Knex, input: ClientRegistrationInput): Promise<ClientRegistration> {
  const clientId = input.clientId ?? randomUUID();
  if (!CLIENT_ID_RE.test(clientId)) throw new ClientRegistrationError('client id: 1-128 of letters, digits and ._:@-');
  if (!input.name?.trim()) throw new ClientRegistrationError('a client needs a name');
  if (!isRole(input.role)) throw new ClientRegistrationError(`role must be one of admin, data-manager, researcher, pi`);
  if (Boolean(input.jwks) === Boolean(input.jwksUri)) throw new ClientRegistrationError('give exactly one of a JWKS (keys by value) or a JWKS URL');
  if (input.jwks) await validateJwks(input.jwks);
  if (input.jwksUri) validateJwksUri(input.jwksUri);
  if (input.scopes.length === 0) throw new ClientRegistrationError('a client needs at least one allowed scope');
  for (const s of input.scopes) if (!parseScope(s)) throw new ClientRegistrationError(`not a SMART resource scope: ${s}`);
  const projects = [...new Set(input.projects ?? [])];
  if (projects.length > 0) {
    const found = (await knex('projects').whereIn('id', projects).select('id')).map((r: { id: string }) => r.id);
    const missing = projects.filter((p) => !found.includes(p));
    if (missing.length > 0) throw new ClientRegistrationError(`unknown project(s): ${missing.join(', ')}`);
  }
  try {
    await knex('oauth_clients').insert({
      client_id: clientId,
      name: input.name.trim(),
      jwks: input.jwks ? JSON.stringify(input.jwks) : null,
      jwks_uri: input.jwksUri ?? null,
      scopes: input.scopes,
      role: input.role,
      projects,
      facility: input.facility ?? null,
    });
  } catch (err) {
    if ((err as { code?: string }).code === '23505') throw new ClientRegistrationError(`client ${clientId} is already registered`);
    throw err;
  }
  return { clientId, name: input.name.trim(), jwks: input.jwks, jwksUri: input.jwksUri, scopes: input.scopes, role: input.role, projects, facility: input.facility, enabled: true };
}

/** Looks a client up by id (undefined when unknown). */
export async function findClient(knex: Knex, clientId: string): Promise<ClientRegistration | undefined> {
  if (!CLIENT_ID_RE.test(clientId)) return undefined;
  const row = await knex('oauth_clients').where({ client_id: clientId }).first();
  if (!row) return undefined;
  const jwks = typeof row.jwks === 'string' ? JSON.parse(row.jwks) : row.jwks;
  return {
    clientId: row.client_id,
    name: row.name,
    jwks: jwks ?? undefined,
    jwksUri: row.jwks_uri ?? undefined,
    scopes: row.scopes ?? [],
    role: row.role,
    projects: row.projects ?? [],
    facility: row.facility ?? undefined,
    enabled: row.enabled,
  };
}

/** Disables (or re-enables) a client: a disabled client gets no new tokens. */
export async function setClientEnabled(knex: Knex, clientId: string, enabled: boolean): Promise<boolean> {
  return (await knex('oauth_clients').where({ client_id: clientId }).update({ enabled, updated_at: knex.fn.now() })) > 0;
}

async function validateJwks(jwks: { keys: JWK[] }): Promise<void> {
  if (!jwks || !Array.isArray(jwks.keys) || jwks.keys.length === 0) throw new ClientRegistrationError('the JWKS has no keys');
  for (const key of jwks.keys) {
    if (PRIVATE_MEMBERS.some((m) => m in key)) throw new ClientRegistrationError('the JWKS must hold public keys only');
    if (key.kty !== 'RSA' && key.kty !== 'EC') throw new ClientRegistrationError('JWKS keys must be RSA or EC');
    if (!key.kid) throw new ClientRegistrationError('every JWKS key needs a kid');
    const alg = key.alg ?? (key.kty === 'RSA' ? 'RS384' : 'ES384');
    try {
      await importJWK(key, alg);
    } catch (err) {
      throw new ClientRegistrationError(`JWKS key ${key.kid} is not usable: ${(err as Error).message}`);
    }
  }
}

/** JWKS URLs must be https, except on the loopback interface (development, tests). */
function validateJwksUri(uri: string): void {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw new ClientRegistrationError(`not a URL: ${uri}`);
  }
  const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname);
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) throw new ClientRegistrationError('a JWKS URL must use https');
}
