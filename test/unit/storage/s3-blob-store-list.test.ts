import type { S3Client } from '@aws-sdk/client-s3';
import { BlobStoreUnavailableError } from '../../../src/storage/blob-store';
import { createS3BlobStore } from '../../../src/storage/s3-blob-store';

/**
 * list() paging, against a scripted client: s3rver cannot serve a truncated ListObjectsV2 page
 * on Node >= 17 (its continuation token uses DES, which OpenSSL 3 refuses), so the integration
 * suite cannot reach this path.
 */
const key = (n: number) => n.toString(16).padStart(64, '0');

function scriptedClient(pages: Array<{ keys: string[]; next?: string }>) {
  const calls: Array<Record<string, unknown>> = [];
  const client = {
    async send(command: { input: Record<string, unknown> }) {
      calls.push(command.input);
      const index = command.input.ContinuationToken === undefined ? 0 : Number(command.input.ContinuationToken);
      const page = pages[index];
      return {
        Contents: page.keys.map((k) => ({ Key: k, LastModified: new Date(1_700_000_000_000 + index) })),
        IsTruncated: page.next !== undefined,
        NextContinuationToken: page.next,
      };
    },
    destroy() {},
  };
  return { client: client as unknown as S3Client, calls };
}

describe('s3 blob store list()', () => {
  test('follows continuation tokens and yields only well-formed keys under the prefix', async () => {
    const { client, calls } = scriptedClient([
      { keys: [`p/blobs/${key(1)}`, `p/blobs/${key(2)}`], next: '1' },
      { keys: [`p/blobs/${key(3)}`, 'p/blobs/not-a-key', `p/blobs/${key(0xabc).toUpperCase()}`], next: '2' },
      { keys: [`p/blobs/${key(5)}`] },
    ]);
    const store = createS3BlobStore({ bucket: 'b', prefix: 'p', stagingDir: '/nonexistent', client, listPageSize: 2 });
    const seen: Array<{ key: string; lastModified: Date }> = [];
    for await (const entry of store.list()) seen.push(entry);
    expect(seen.map((e) => e.key)).toEqual([key(1), key(2), key(3), key(5)]);
    expect(seen[3].lastModified.getTime()).toBe(1_700_000_000_002);
    expect(calls).toEqual([
      { Bucket: 'b', Prefix: 'p/blobs/', MaxKeys: 2, ContinuationToken: undefined },
      { Bucket: 'b', Prefix: 'p/blobs/', MaxKeys: 2, ContinuationToken: '1' },
      { Bucket: 'b', Prefix: 'p/blobs/', MaxKeys: 2, ContinuationToken: '2' },
    ]);
  });

  test('a 5xx while listing is BlobStoreUnavailableError', async () => {
    const client = {
      async send() {
        throw Object.assign(new Error('We encountered an internal error.'), {
          name: 'InternalError',
          $metadata: { httpStatusCode: 500 },
        });
      },
      destroy() {},
    } as unknown as S3Client;
    const store = createS3BlobStore({ bucket: 'b', stagingDir: '/nonexistent', client });
    const iterate = async () => {
      for await (const _ of store.list()) void _;
    };
    await expect(iterate()).rejects.toBeInstanceOf(BlobStoreUnavailableError);
  });
});
