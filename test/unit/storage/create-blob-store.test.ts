import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createBlobStore } from '../../../src/storage/create-blob-store';

describe('createBlobStore', () => {
  test('kind fs gives the filesystem backend rooted where configured', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'imaging-lake-create-'));
    try {
      const store = createBlobStore({ kind: 'fs', root });
      expect(store.kind).toBe('fs');
      await store.checkHealth();
      await store.close();
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  test('kind s3 gives the S3 backend without touching the network', async () => {
    const store = createBlobStore({
      kind: 's3',
      bucket: 'imaging',
      region: 'eu-west-1',
      stagingDir: path.join(os.tmpdir(), 'unused'),
      credentials: { accessKeyId: 'a', secretAccessKey: 'b' },
    });
    expect(store.kind).toBe('s3');
    expect(store.presign).toBeUndefined();
    await store.close();
  });

  test('an unknown kind is refused', () => {
    expect(() => createBlobStore({ kind: 'tape' } as never)).toThrow(/unknown blob store kind "tape"/);
  });
});
