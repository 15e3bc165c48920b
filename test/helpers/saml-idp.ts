/**
 * A SAML 2.0 identity provider made in the test harness: a self-signed key and certificate
 * created per test run, and signed SAML Responses / Assertions built with xml-crypto
 * (enveloped signature, exclusive C14N, RSA-SHA256), posted to our ACS like a browser would.
 */
import { randomUUID } from 'node:crypto';
import { generate } from 'selfsigned';
import { SignedXml } from 'xml-crypto';

/** A test IdP: its identity, certificate and a Response builder. */
export interface TestIdp {
  entityId: string;
  ssoUrl: string;
  certPem: string;
  privateKeyPem: string;
  /** Builds a base64 SAMLResponse as the HTTP-POST binding carries it. */
  buildResponse(options: SamlResponseOptions): string;
}

/** What the assertion says; defaults make a valid one. */
export interface SamlResponseOptions {
  nameId: string;
  audience: string;
  recipient: string;
  groups?: string[];
  projects?: string[];
  displayName?: string;
  /** Offsets in seconds from now (defaults -60 and +300). */
  notBefore?: number;
  notOnOrAfter?: number;
  assertionId?: string;
  issuer?: string;
  /** Also sign the Response element (after the Assertion). */
  signResponse?: boolean;
  /** Sign the assertion at all (default true). */
  signAssertion?: boolean;
  /** Key to sign with instead of the IdP's own (a forged signature). */
  signingKeyPem?: string;
  /** Edits the XML after signing (tampering). */
  tamper?: (xml: string) => string;
  inResponseTo?: string;
}

const SAMLP = 'urn:oasis:names:tc:SAML:2.0:protocol';
const SAML = 'urn:oasis:names:tc:SAML:2.0:assertion';

function iso(offsetSeconds: number): string {
  return new Date(Date.now() + offsetSeconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function esc(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function attribute(name: string, values: string[]): string {
  if (values.length === 0) return '';
  return `<saml:Attribute Name="${esc(name)}" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic">${values
    .map((v) => `<saml:AttributeValue xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="xs:string">${esc(v)}</saml:AttributeValue>`)
    .join('')}</saml:Attribute>`;
}

function sign(xml: string, elementLocalName: 'Assertion' | 'Response', privateKey: string, certPem: string): string {
  const sig = new SignedXml({
    privateKey,
    publicCert: certPem,
    signatureAlgorithm: 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
    canonicalizationAlgorithm: 'http://www.w3.org/2001/10/xml-exc-c14n#',
  });
  const target = elementLocalName === 'Assertion' ? "//*[local-name(.)='Assertion']" : "/*[local-name(.)='Response']";
  sig.addReference({
    xpath: target,
    digestAlgorithm: 'http://www.w3.org/2001/04/xmlenc#sha256',
    transforms: ['http://www.w3.org/2000/09/xmldsig#enveloped-signature', 'http://www.w3.org/2001/10/xml-exc-c14n#'],
  });
  // SAML core 5.4.1: the Signature follows the element's Issuer.
  sig.computeSignature(xml, { location: { reference: `${target}/*[local-name(.)='Issuer']`, action: 'after' } });
  return sig.getSignedXml();
}

/** Creates a test IdP with a fresh 2048-bit RSA key and self-signed certificate. */
export async function createTestIdp(entityId = 'https://idp.test/saml'): Promise<TestIdp> {
  const pems = await generate([{ name: 'commonName', value: 'imaging-lake test idp' }], { keySize: 2048, algorithm: 'sha256' });
  const certPem = pems.cert;
  const privateKeyPem = pems.private;
  return {
    entityId,
    ssoUrl: 'https://idp.test/sso',
    certPem,
    privateKeyPem,
    buildResponse(o) {
      const assertionId = o.assertionId ?? `_a${randomUUID().replace(/-/g, '')}`;
      const responseId = `_r${randomUUID().replace(/-/g, '')}`;
      const issuer = o.issuer ?? entityId;
      const nb = iso(o.notBefore ?? -60);
      const noa = iso(o.notOnOrAfter ?? 300);
      const irt = o.inResponseTo ? ` InResponseTo="${esc(o.inResponseTo)}"` : '';
      const assertion =
        `<saml:Assertion xmlns:saml="${SAML}" ID="${assertionId}" Version="2.0" IssueInstant="${iso(0)}">` +
        `<saml:Issuer>${esc(issuer)}</saml:Issuer>` +
        `<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">${esc(o.nameId)}</saml:NameID>` +
        `<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData NotOnOrAfter="${noa}" Recipient="${esc(o.recipient)}"${irt}/></saml:SubjectConfirmation></saml:Subject>` +
        `<saml:Conditions NotBefore="${nb}" NotOnOrAfter="${noa}"><saml:AudienceRestriction><saml:Audience>${esc(o.audience)}</saml:Audience></saml:AudienceRestriction></saml:Conditions>` +
        `<saml:AuthnStatement AuthnInstant="${iso(0)}" SessionIndex="${assertionId}"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>` +
        `<saml:AttributeStatement>${attribute('groups', o.groups ?? [])}${attribute('projects', o.projects ?? [])}${attribute('displayName', o.displayName ? [o.displayName] : [])}</saml:AttributeStatement>` +
        `</saml:Assertion>`;
      const key = o.signingKeyPem ?? privateKeyPem;
      const signedAssertion = o.signAssertion === false ? assertion : sign(assertion, 'Assertion', key, certPem);
      let response =
        `<samlp:Response xmlns:samlp="${SAMLP}" xmlns:saml="${SAML}" ID="${responseId}" Version="2.0" IssueInstant="${iso(0)}" Destination="${esc(o.recipient)}"${irt}>` +
        `<saml:Issuer>${esc(issuer)}</saml:Issuer>` +
        `<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>` +
        signedAssertion.replace(/^<\?xml[^>]*>/, '') +
        `</samlp:Response>`;
      if (o.signResponse) response = sign(response, 'Response', key, certPem);
      if (o.tamper) response = o.tamper(response);
      return Buffer.from(response, 'utf8').toString('base64');
    },
  };
}
