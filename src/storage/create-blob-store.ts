import type { BlobStore } from './blob-store';
import { createFsBlobStore } from './fs-blob-store';
import { createS3BlobStore } from './s3-blob-store';

/** Which storage area to use; built by config.ts and passed in (STYLE 7). */
export type BlobStoreConfig =
  | { kind: 'fs'; root: string }
  | {
      kind: 's3';
      bucket: string;
      prefix?: string;
      endpoint?: string;
      region?: string;
      forcePathStyle?: boolean;
      stagingDir: string;
      /** Static keys; omitted means the AWS SDK's standard credential chain. */
      credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
    };

/** Creates the configured BlobStore backend (Orthanc-style storage area port, STYLE 4). */
export function createBlobStore(cfg: BlobStoreConfig): BlobStore {
  switch (cfg.kind) {
    case 'fs':
      return createFsBlobStore({ root: cfg.root });
    case 's3':
      return createS3BlobStore({
        bucket: cfg.bucket,
        prefix: cfg.prefix,
        endpoint: cfg.endpoint,
        region: cfg.region,
        forcePathStyle: cfg.forcePathStyle,
        stagingDir: cfg.stagingDir,
        credentials: cfg.credentials,
      });
    default: {
      const unknownKind: never = cfg;
      throw new Error(`unknown blob store kind ${JSON.stringify((unknownKind as { kind?: unknown }).kind)}`);
    }
  }
}
