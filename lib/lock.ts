// Lock files: O_EXCL create holding our pid; a lock whose pid is dead (kill -9) is stale and taken over.
import { closeSync, openSync, readFileSync, unlinkSync, writeSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { AivmError, EXIT } from "./errors.ts";

const held = new Set<string>();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function tryAcquire(path: string): number | null {
  try {
    const fd = openSync(path, "wx", 0o600);
    writeSync(fd, String(process.pid));
    closeSync(fd);
    return null;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    let pid = NaN;
    try { pid = Number(readFileSync(path, "utf8").trim()); } catch { return -1; }
    if (!Number.isInteger(pid) || pid <= 0 || (!alive(pid) && pid !== process.pid)) {
      try { unlinkSync(path); } catch {}
      return -1; // stale: retry at once
    }
    return pid;
  }
}

export interface LockOptions {
  /** how long to wait for another holder, in ms (default 10 s); 0 fails at once */
  waitMs?: number;
  /** what the lock protects, for the error message */
  what?: string;
  /** a holder in this same process may re-enter */
  reentrant?: boolean;
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export function acquireLock(path: string, opts: LockOptions = {}): () => void {
  if (held.has(path)) {
    if (opts.reentrant) return () => {};
    throw new AivmError(opts.what ?? "lock", `${path} is already held by this process`, EXIT.FAILED);
  }
  mkdirSync(dirname(path), { recursive: true });
  const deadline = Date.now() + (opts.waitMs ?? 10_000);
  let delay = 5;
  for (;;) {
    const holder = tryAcquire(path);
    if (holder === null) break;
    if (holder === -1) continue;
    if (Date.now() >= deadline) {
      throw new AivmError(opts.what ?? "lock", `another aivm process (pid ${holder}) holds ${path}`, EXIT.FAILED, "wait for it to finish, then re-run");
    }
    sleepSync(delay + Math.random() * delay);
    delay = Math.min(delay * 2, 100);
  }
  held.add(path);
  return () => {
    held.delete(path);
    try { unlinkSync(path); } catch {}
  };
}

export function withLock<T>(path: string, fn: () => T, opts: LockOptions = {}): T {
  const release = acquireLock(path, opts);
  try {
    return fn();
  } finally {
    release();
  }
}
