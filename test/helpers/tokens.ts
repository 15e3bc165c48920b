/**
 * Test helpers for SMART Backend Services: client key pairs (RS384 / ES384), signed client
 * assertions, a local JWKS server, and raw JWTs for negative tests (alg none, tampering).
 */
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type JWK, type KeyLike } from 'jose';

export const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/** A client's key pair with its public JWK (kid and alg set). */
export interface ClientKey {
  alg: 'RS384' | 'ES384' | 'RS256' | 'ES256';
  kid: string;
  privateKey: KeyLike;
  publicJwk: JWK;
}

/** Generates a client key pair. */
export async function makeClientKey(alg: ClientKey['alg'] = 'ES384', kid = `k-${randomUUID().slice(0, 8)}`): Promise<ClientKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { alg, kid, privateKey, publicJwk };
}

/** Options of a client assertion; everything defaults to a valid SMART assertion. */
export interface AssertionOptions {
  clientId: string;
  audience: string;
  key: ClientKey;
  jti?: string;
  /** Seconds from now (default 120). */
  expiresIn?: number;
  issuer?: string;
  subject?: string;
  header?: Record<string, unknown>;
}

/** Signs a client assertion (SMART App Launch 2.2, Backend Services authentication JWT). */
export async function makeClientAssertion(o: AssertionOptions): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({})
    .setProtectedHeader({ alg: o.key.alg, kid: o.key.kid, typ: 'JWT', ...o.header })
    .setIssuer(o.issuer ?? o.clientId)
    .setSubject(o.subject ?? o.clientId)
    .setAudience(o.audience)
    .setJti(o.jti ?? randomUUID())
    .setIssuedAt(now)
    .setExpirationTime(now + (o.expiresIn ?? 120))
    .sign(o.key.privateKey);
}

/** The form of a token request. */
export function tokenForm(assertion: string, scope: string, extra: Record<string, string> = {}): Record<string, string> {
  return { grant_type: 'client_credentials', scope, client_assertion_type: JWT_BEARER, client_assertion: assertion, ...extra };
}

/** A JWKS served over HTTP on the loopback interface. */
export interface JwksServer {
  url: string;
  hits(): number;
  setKeys(keys: JWK[]): void;
  close(): Promise<void>;
}

/** Serves `{ keys }` at http://127.0.0.1:<port>/jwks.json. */
export async function startJwksServer(keys: JWK[]): Promise<JwksServer> {
  let current = keys;
  let hits = 0;
  const server = http.createServer((req, res) => {
    if (req.url !== '/jwks.json') {
      res.writeHead(404).end();
      return;
    }
    hits++;
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ keys: current }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/jwks.json`,
    hits: () => hits,
    setKeys: (k) => {
      current = k;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function b64url(value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

/** An unsigned JWT (`alg: none`) with the given claims. */
export function unsignedJwt(claims: Record<string, unknown>, header: Record<string, unknown> = {}): string {
  return `${b64url({ alg: 'none', typ: 'at+jwt', ...header })}.${b64url(claims)}.`;
}

/** Replaces the payload of a signed JWT (the signature no longer matches). */
export function tamperJwt(token: string, change: (claims: Record<string, unknown>) => Record<string, unknown>): string {
  const [h, p, s] = token.split('.');
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as Record<string, unknown>;
  return `${h}.${b64url(change(claims))}.${s}`;
}
