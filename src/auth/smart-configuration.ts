/**
 * The SMART configuration document (SMART App Launch 2.2, "Conformance": /.well-known/
 * smart-configuration). This server offers SMART Backend Services (client_credentials with
 * asymmetric client authentication) and token introspection; no authorization endpoint, so
 * `response_types_supported` is empty and no launch capability is announced.
 */
import type { AuthConfig } from './auth-config';

/** The discovery document's fields. */
export interface SmartConfiguration {
  issuer: string;
  jwks_uri: string;
  token_endpoint: string;
  introspection_endpoint: string;
  grant_types_supported: string[];
  token_endpoint_auth_methods_supported: string[];
  token_endpoint_auth_signing_alg_values_supported: string[];
  scopes_supported: string[];
  response_types_supported: string[];
  capabilities: string[];
  code_challenge_methods_supported: string[];
}

/** Builds the discovery document from the configured issuer. */
export function buildSmartConfiguration(config: Pick<AuthConfig, 'issuer' | 'tokenEndpoint'>): SmartConfiguration {
  return {
    issuer: config.issuer,
    jwks_uri: `${config.issuer}/oauth2/jwks`,
    token_endpoint: config.tokenEndpoint,
    introspection_endpoint: `${config.issuer}/oauth2/introspect`,
    grant_types_supported: ['client_credentials'],
    token_endpoint_auth_methods_supported: ['private_key_jwt'],
    token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
    scopes_supported: [
      'system/*.cruds',
      'system/*.rs',
      'system/ImagingStudy.rs',
      'system/ImagingStudy.crs',
      'system/Patient.rs',
      'system/Group.cruds',
      'user/*.cruds',
      'user/*.rs',
      'user/ImagingStudy.rs',
      'user/Group.cruds',
    ],
    response_types_supported: [],
    capabilities: ['client-confidential-asymmetric', 'permission-v2', 'permission-v1'],
    code_challenge_methods_supported: ['S256'],
  };
}
