/**
 * DICOM over TLS (PS3.15 B.9, the BCP 195 TLS Secure Transport Connection Profile): the
 * listener's certificate and key, and, with a CA, mutual authentication both ways (peers that
 * call must present a certificate the CA signed; peers this server calls must too).
 */
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import type tls from 'node:tls';
import type { DimsePeer, DimseTlsFiles } from '../config';

/** BCP 195: TLS 1.2 or later. */
const MIN_VERSION = 'TLSv1.2';

/** The loaded certificate material and the options made from it. */
export interface DimseTls {
  /** Options of the listener (tls.createServer). */
  server: tls.TlsOptions;
  /** Why a connection that completed the handshake may not go on (mutual TLS: no trusted certificate), or undefined. */
  refusal(socket: tls.TLSSocket): string | undefined;
  /** Options of an association this server opens to `host` (tls.connect). */
  client(host: string): tls.ConnectionOptions;
}

/** Reads the PEM files; rejects with a message that names the file that could not be read. */
export async function loadDimseTls(files: DimseTlsFiles): Promise<DimseTls> {
  const read = (what: string, file: string) =>
    readFile(file).catch((err: NodeJS.ErrnoException) => {
      throw new Error(`DIMSE TLS: the ${what} (${file}) cannot be read: ${err.code ?? err.message}`);
    });
  const [cert, key, ca] = await Promise.all([read('certificate, DIMSE_TLS_CERT', files.certFile), read('private key, DIMSE_TLS_KEY', files.keyFile), files.caFile ? read('CA certificates, DIMSE_TLS_CA', files.caFile) : undefined]);
  const mutual = ca !== undefined;
  return {
    // The certificate a peer presents is judged by the listener (DimseTls.refusal), after the
    // handshake, so that a refusal can name the peer's address and the reason in the audit trail.
    server: { cert, key, ca, requestCert: mutual, rejectUnauthorized: false, minVersion: MIN_VERSION },
    refusal: (socket) => (!mutual || socket.authorized ? undefined : `the peer's certificate was refused: ${String(socket.authorizationError ?? 'none presented')}`),
    // The same certificate identifies this server when it calls (a peer that asks for one gets it).
    client: (host) => ({ cert, key, ca, minVersion: MIN_VERSION, servername: net.isIP(host) ? undefined : host }),
  };
}

/**
 * The TLS options of an association to `peer`, or undefined for plain TCP: a peer's own `tls`
 * setting, or else the listener's mode. A peer marked `tls` when the listener has none is called
 * with the system's CAs and no certificate of ours.
 */
export function outboundTls(peer: DimsePeer & { host: string }, own: DimseTls | undefined): tls.ConnectionOptions | undefined {
  if (!(peer.tls ?? own !== undefined)) return undefined;
  return own ? own.client(peer.host) : { minVersion: MIN_VERSION, servername: net.isIP(peer.host) ? undefined : peer.host };
}
