import { createHmac } from 'node:crypto';

/**
 * De-identified UIDs (PS3.15 E.3.9 "without Retain UIDs"; PS3.5 B.2 UUID-derived UIDs):
 * `2.25.` followed by the decimal value of the first 128 bits of HMAC-SHA-256(key, project | uid).
 * Keyed and per project: stable for one project, unlinkable across projects, not reversible
 * without the key (the reverse lookup is the deid_uids table).
 */
export function deidentifyUid(key: Buffer, projectId: string, uid: string): string {
  const mac = createHmac('sha256', key).update(`${projectId}|${uid.trim()}`).digest();
  return `2.25.${BigInt(`0x${mac.subarray(0, 16).toString('hex')}`).toString(10)}`;
}

/** A mapper bound to one key and project, memoising repeated UIDs of one response. */
export function createUidMapper(key: Buffer, projectId: string): (uid: string) => string {
  const seen = new Map<string, string>();
  return (uid) => {
    let mapped = seen.get(uid);
    if (mapped === undefined) {
      mapped = deidentifyUid(key, projectId, uid);
      if (seen.size < 100_000) seen.set(uid, mapped);
    }
    return mapped;
  };
}
