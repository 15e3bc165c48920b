/**
 * Browser sign-in through SAML 2.0 (Web Browser SSO profile) with @node-saml/passport-saml:
 * the Assertion must be signed by a configured IdP certificate, restricted to our audience,
 * within its validity window, from the expected IdP, and never seen before (its ID goes through
 * the durable replay guard). IdP groups map onto our roles through AUTH_SAML_ROLE_MAP.
 */
import { Strategy as SamlStrategy, ValidateInResponseTo, type Profile, type VerifiedCallback } from '@node-saml/passport-saml';
import type { Knex } from 'knex';
import { Passport } from 'passport';
import type { SamlConfig } from './auth-config';
import { mapRole, stringList } from './bearer-verifier';
import { projectsOfSubject } from './project-store';
import { claimAssertionId } from './replay-guard';
import type { Role } from './roles';

/** Who signed in, in our terms. */
export interface SamlIdentity {
  subject: string;
  role: Role;
  projects: string[];
  facility?: string;
  displayName?: string;
  idpIssuer?: string;
  assertionId?: string;
}

/** The configured passport instance with the `saml` strategy. */
export interface SamlLogin {
  passport: InstanceType<typeof Passport>;
  strategy: SamlStrategy;
  /** The SP metadata document (for registering this server at the IdP). */
  metadata(): string;
}

/** A sign-in refused after the assertion itself was valid (no role, replay, wrong issuer). */
export class SamlRefusal extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SamlRefusal';
  }
}

function attribute(profile: Profile, name: string): unknown {
  const attrs = (profile.attributes ?? {}) as Record<string, unknown>;
  return attrs[name] ?? profile[name];
}

/** Maps a validated SAML profile onto our identity (pure: role map, projects, facility). */
export function mapSamlProfile(profile: Profile, cfg: SamlConfig): Omit<SamlIdentity, 'assertionId'> {
  if (!profile.nameID) throw new SamlRefusal('assertion has no NameID');
  if (cfg.idpIssuer && profile.issuer !== cfg.idpIssuer) throw new SamlRefusal('assertion is from an unexpected IdP');
  const groups = stringList(attribute(profile, cfg.groupsAttribute));
  const role = mapRole(groups, cfg.roleMap);
  if (!role) throw new SamlRefusal('no group of this user maps onto a role');
  const projects = new Set(stringList(attribute(profile, cfg.projectsAttribute)));
  if (cfg.projectGroupPrefix) {
    for (const g of groups) if (g.startsWith(cfg.projectGroupPrefix) && g.length > cfg.projectGroupPrefix.length) projects.add(g.slice(cfg.projectGroupPrefix.length));
  }
  const facility = attribute(profile, cfg.facilityAttribute);
  const displayName = attribute(profile, cfg.displayNameAttribute);
  return {
    subject: profile.nameID,
    role,
    projects: [...projects].filter((p) => /^[\w.-]{1,64}$/.test(p)),
    facility: typeof facility === 'string' ? facility : undefined,
    displayName: typeof displayName === 'string' ? displayName : undefined,
    idpIssuer: profile.issuer,
  };
}

/** The assertion's ID and NotOnOrAfter, from the verified assertion node-saml returns. */
function assertionFacts(profile: Profile): { id?: string; notOnOrAfter?: string } {
  const doc = profile.getAssertion?.() as { Assertion?: { $?: { ID?: string }; Conditions?: Array<{ $?: { NotOnOrAfter?: string } }> } } | undefined;
  return { id: doc?.Assertion?.$?.ID, notOnOrAfter: doc?.Assertion?.Conditions?.[0]?.$?.NotOnOrAfter };
}

/** Builds the passport SAML strategy for the configured IdP. */
export function createSamlLogin(deps: { config: SamlConfig; knex: Knex }): SamlLogin {
  const cfg = deps.config;
  const verify = (profile: Profile | null, done: VerifiedCallback) => {
    (async () => {
      if (!profile) throw new SamlRefusal('no assertion');
      const identity = mapSamlProfile(profile, cfg);
      const { id, notOnOrAfter } = assertionFacts(profile);
      if (!id) throw new SamlRefusal('assertion has no ID');
      const expires = notOnOrAfter ? new Date(Date.parse(notOnOrAfter) + cfg.clockSkewMs) : new Date(Date.now() + 3600_000);
      if (!(await claimAssertionId(deps.knex, `saml:${identity.idpIssuer ?? 'idp'}`, id, expires))) throw new SamlRefusal('assertion already used');
      const members = await projectsOfSubject(deps.knex, identity.subject);
      const full: SamlIdentity = { ...identity, projects: [...new Set([...identity.projects, ...members])], assertionId: id };
      return full;
    })().then(
      (identity) => done(null, identity as unknown as Record<string, unknown>),
      (err: unknown) => (err instanceof SamlRefusal ? done(null, undefined, { message: err.message }) : done(err as Error)),
    );
  };
  const strategy = new SamlStrategy(
    {
      name: 'saml',
      entryPoint: cfg.entryPoint,
      issuer: cfg.spEntityId,
      callbackUrl: cfg.callbackUrl,
      idpCert: cfg.idpCerts,
      idpIssuer: cfg.idpIssuer,
      audience: cfg.audience,
      wantAssertionsSigned: true,
      wantAuthnResponseSigned: cfg.wantResponseSigned,
      acceptedClockSkewMs: cfg.clockSkewMs,
      validateInResponseTo: ValidateInResponseTo.ifPresent,
      identifierFormat: null,
      disableRequestedAuthnContext: true,
      signatureAlgorithm: 'sha256',
    },
    verify,
    verify,
  );
  const passport = new Passport();
  passport.use('saml', strategy as unknown as Parameters<typeof passport.use>[1]);
  return {
    passport,
    strategy,
    metadata: () => strategy.generateServiceProviderMetadata(null),
  };
}
