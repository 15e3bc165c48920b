/**
 * Composition of the access layer: keys, verifiers, SAML and the audit recorder, built once by
 * createApp and handed to the router, the authenticator and the guard.
 */
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { AuditRecorder } from '../audit/audit-response';
import type { AuthConfig } from './auth-config';
import { createBearerVerifier, type BearerVerifier } from './bearer-verifier';
import type { RemoteJwksCache } from './client-assertion';
import { createSamlLogin, type SamlLogin } from './saml-login';
import { openKeyStore, type KeyStore } from './signing-keys';

/** The access layer's shared services. */
export interface AuthServices {
  config: AuthConfig;
  knex: Knex;
  logger: Logger;
  keys: KeyStore;
  verifier: BearerVerifier;
  remoteJwks: RemoteJwksCache;
  audit: AuditRecorder;
  saml?: SamlLogin;
}

/** Opens the signing keys (creating the first one) and builds the verifiers; call once at start-up. */
export async function createAuthServices(deps: { knex: Knex; config: AuthConfig; logger: Logger }): Promise<AuthServices> {
  const keys = await openKeyStore(deps.config);
  return {
    config: deps.config,
    knex: deps.knex,
    logger: deps.logger,
    keys,
    verifier: createBearerVerifier({ keys, config: deps.config }),
    remoteJwks: new Map(),
    audit: { knex: deps.knex, logger: deps.logger, source: { observer: deps.config.auditSourceId, baseUrl: deps.config.issuer } },
    saml: deps.config.saml ? createSamlLogin({ config: deps.config.saml, knex: deps.knex }) : undefined,
  };
}
