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
