import { randomBytes } from 'node:crypto';

/** Builds a multipart/related body of DICOM parts, as STOW-RS clients send it (PS3.18 8.6.1.2). */
export function buildMultipart(
  parts: Buffer[],
  options: { boundary?: string; quoted?: boolean; partType?: string; extraParams?: string } = {},
): { body: Buffer; contentType: string; boundary: string } {
  const boundary = options.boundary ?? `b-${randomBytes(8).toString('hex')}`;
  const chunks: Buffer[] = [];
  for (const part of parts) {
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Type: ${options.partType ?? 'application/dicom'}\r\n\r\n`));
    chunks.push(part);
    chunks.push(Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  const q = options.quoted === false ? '' : '"';
  const contentType = `multipart/related; type=${q}application/dicom${q}; boundary=${q}${boundary}${q}${options.extraParams ?? ''}`;
  return { body: Buffer.concat(chunks), contentType, boundary };
}
