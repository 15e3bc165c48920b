/**
 * Pieces of a stand-in DIMSE peer for tests: a free port for its listener, and an SCP base that
 * accepts every association and presentation context (in the first syntax proposed).
 */
import net from 'node:net';
import { Scp, constants, type association } from 'dcmjs-dimse';

/** A TCP port nothing listens on right now. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** Resolves once something accepts TCP connections on `port` of 127.0.0.1 (a peer started as a process); rejects after 10 s. */
export async function listening(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1', () => (s.end(), r(true)));
      s.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listens on port ${port}`);
}

/** An SCP accepting whatever is proposed; subclasses answer the messages a test needs. */
export class AcceptingScp extends Scp {
  override associationRequested(a: association.Association): void {
    for (const { id } of a.getPresentationContexts()) {
      const c = a.getPresentationContext(id);
      c.setResult(constants.PresentationContextResult.Accept, c.getTransferSyntaxUids()[0]);
    }
    this.sendAssociationAccept();
  }

  override associationReleaseRequested(): void {
    this.sendAssociationReleaseResponse();
  }
}
