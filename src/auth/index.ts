/** The access layer's public API (see the report in the issue for the wiring). */
export { loadAuthConfig, AuthConfigError, type AuthConfig, type OidcConfig, type SamlConfig } from './auth-config';
export { createAuthServices, type AuthServices } from './auth-services';
export { createAuthRouter } from './auth-router';
export { createAuthenticator, sendAuthError, bearerTokenOf } from './authenticator';
export { createAccessGuard, createAuthorizer, requestedProjects, type AccessLocals } from './access-guard';
export { authErrorBody, errorFlavour, wwwAuthenticate, OAuthError, TokenError } from './auth-errors';
export { decide, roleMayPerform, type AccessDecision, type AccessRequest, type Interaction } from './policy';
export { fieldVisibility, type FieldVisibility } from './policy-fields';
export { classifyRequest, classifyFhirRequest, classifyDicomwebRequest, isPublicPath, PUBLIC_PATHS, type RouteAccess } from './policy-routes';
export { restrictStudiesToProjects, restrictResourcesToProjects, studyRestrictionFor, type StudyRestriction } from './project-filters';
export { createProject, addProjectMember, linkStudyToProjects, linkResourceToProjects, projectsOfSubject } from './project-store';
export { registerClient, findClient, setClientEnabled, ClientRegistrationError, type ClientRegistration, type ClientRegistrationInput } from './client-registry';
export { mintLocalToken, type LocalTokenRequest } from './local-token';
export { openKeyStore, rotateSigningKey, type KeyStore } from './signing-keys';
export { ROLES, isRole, defaultScopesForRole, type Role } from './roles';
export { parseScope, parseScopes, grantScopes, formatScope, type ResourceScope } from './scopes';
export type { Principal } from './principal';
