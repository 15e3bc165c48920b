import type { Role } from './roles';
import type { ResourceScope } from './scopes';

/** Who is calling: the verified content of a bearer token, attached to `req.principal`. */
export interface Principal {
  /** `sub` of the token: a user (SAML NameID, OIDC sub) or the client id for backend services. */
  readonly subject: string;
  /** The OAuth client the token was issued to, when known. */
  readonly clientId?: string;
  readonly role: Role;
  /** Parsed SMART resource scopes (non-resource scopes such as `openid` are left out). */
  readonly scopes: readonly ResourceScope[];
  /** The token's scope claim as given (space-delimited). */
  readonly scopeText: string;
  /** Project ids the principal belongs to. */
  readonly projects: readonly string[];
  readonly facility?: string;
  /** `jti` of the token, for audit correlation (BALP agent.policy). */
  readonly tokenId?: string;
  readonly issuer: string;
  /** Where the token came from: our own issuer or a configured OIDC provider. */
  readonly source: 'local' | 'oidc';
  /** Token expiry, seconds since the epoch. */
  readonly expiresAt: number;
  readonly displayName?: string;
}

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** Set by the authenticator once a bearer token has been verified. */
      principal?: Principal;
    }
  }
}
