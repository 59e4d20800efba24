// Lock files held with flock(2): the kernel drops the lock when its holder dies (kill -9 included), so a lock
// left by a killed process is taken over at once, with no pid guessing and no race between two takers.
// The holder removes the file when it lets go, so nothing is left behind. That is safe because a taker checks, once
// it holds the flock, that the path still names the file it locked (a file unlinked in between is let go and the
// take retried); waiters poll without holding the file open. The file holds the holder's pid, for messages.
// Fallback where flock cannot be loaded: an O_EXCL pid file created with link(2), so it is never seen empty.
import { closeSync, fstatSync, ftruncateSync, linkSync, lstatSync, mkdirSync, openSync, readFileSync, unlinkSync, writeFileSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { dlopen, FFIType } from "bun:ffi";
import { AivmError, EXIT } from "./errors.ts";
import { openOwnFile } from "./fsutil.ts";

const held = new Set<string>();

const LOCK_EX = 2;
const LOCK_NB = 4;

type FlockFn = (fd: number, op: number) => number;
let flockFn: FlockFn | null | undefined;

/** For tests: force the pid-file fallback. */
export const lockInternals = { noFlock: false };

function loadFlock(): FlockFn | null {
  if (lockInternals.noFlock) return null;
  if (flockFn !== undefined) return flockFn;
  try {
    const lib = dlopen(process.platform === "darwin" ? "libc.dylib" : "libc.so.6", {
      flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    });
    flockFn = (fd, op) => lib.symbols.flock(fd, op) as number;
  } catch {
    flockFn = null;
  }
  return flockFn;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function holderPid(path: string): number | undefined {
  try {
    const pid = Number(readFileSync(path, "utf8").trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** The path still names the file open on fd (the last holder did not unlink it before we locked it). */
function stillNamed(path: string, fd: number): boolean {
  try {
    const a = fstatSync(fd);
    const b = lstatSync(path);
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}

/** flock: returns the open fd when locked, "retry" when the file was removed under us, or null when someone else holds it. */
function tryFlock(path: string, flock: FlockFn): number | "retry" | null {
  const fd = openOwnFile(path, 0o600); // never O_TRUNC through a planted symlink
  if (flock(fd, LOCK_EX | LOCK_NB) === 0) {
    if (!stillNamed(path, fd)) {
      closeSync(fd);
      return "retry";
    }
    ftruncateSync(fd, 0);
    writeSync(fd, String(process.pid));
    return fd;
  }
  closeSync(fd);
  return null;
}

/** pid file: "ok" when created; a file whose pid is dead is removed ("stale": retry at once). */
function tryPidFile(path: string): "ok" | "stale" | "held" {
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}`;
  writeFileSync(tmp, String(process.pid), { mode: 0o600, flag: "wx" });
  try {
    linkSync(tmp, path);
    return "ok";
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    const pid = holderPid(path);
    if (pid !== undefined && !alive(pid)) {
      try { unlinkSync(path); } catch {}
      return "stale";
    }
    return "held";
  } finally {
    try { unlinkSync(tmp); } catch {}
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
  const flock = loadFlock();
  const deadline = Date.now() + (opts.waitMs ?? 10_000);
  let delay = 2;
  let fd: number | null = null;
  for (;;) {
    if (flock) {
      const r = tryFlock(path, flock);
      if (r === "retry") continue;
      fd = r;
      if (fd !== null) break;
    } else {
      const r = tryPidFile(path);
      if (r === "ok") break;
      if (r === "stale") continue;
    }
    if (Date.now() >= deadline) {
      const pid = holderPid(path);
      throw new AivmError(opts.what ?? "lock", `another aivm process${pid ? ` (pid ${pid})` : ""} holds ${path}`, EXIT.FAILED, "wait for it to finish, then re-run");
    }
    sleepSync(delay + Math.random() * delay);
    delay = Math.min(delay * 2, 50);
  }
  held.add(path);
  return () => {
    held.delete(path);
    // unlink while still holding the flock: a taker that opened the old file sees it is no longer named and retries
    try { unlinkSync(path); } catch {}
    if (fd !== null) closeSync(fd); // closing drops the flock
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
