// aivm's own files, written so that nothing planted at their path is followed: a symlink or a non-regular file where
// aivm expects its own file is refused with one line and nothing written; new content goes into a fresh temporary
// name (created exclusively, never following a link), is synced, gets its mode from the open descriptor, and
// replaces the file by one rename (which replaces a link rather than writing through it). A symlinked config store
// (a dotfiles setup) is the one link written through on purpose: its target is checked the same way.
import { closeSync, constants, fchmodSync, fstatSync, fsyncSync, lstatSync, mkdirSync, openSync, realpathSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { AivmError, EXIT } from "./errors.ts";

// (Bun, like Node, opens every descriptor close-on-exec: a child never inherits a lock)
const { O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_NOFOLLOW } = constants;

function lstatOrNull(p: string) {
  try {
    return lstatSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}

/** Why aivm must not write its own file at `path` (it is a symlink or not a regular file), or null. */
export function ownFileProblem(path: string): string | null {
  const st = lstatOrNull(path);
  if (!st) return null;
  if (st.isSymbolicLink()) return `${path} is a symbolic link, which aivm did not make`;
  if (!st.isFile()) return `${path} is not a regular file`;
  return null;
}

export function refuseForeign(path: string): void {
  const p = ownFileProblem(path);
  if (p) throw new AivmError("refusing to write", p, EXIT.FAILED, "remove it (check what put it there), then re-run");
}

export interface WriteOptions {
  /** a symlink at `path` is written through to its (checked) target instead of being refused (the config store) */
  followSymlink?: boolean;
}

export function writeFileAtomicSync(path: string, content: string | Uint8Array, mode = 0o644, o: WriteOptions = {}): void {
  let dest = path;
  const st = lstatOrNull(path);
  if (st?.isSymbolicLink() && o.followSymlink) {
    dest = realpathSync(path);
    refuseForeign(dest);
  } else refuseForeign(path);
  const dir = dirname(dest);
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `.${basename(dest)}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`);
  const fd = openSync(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
  try {
    writeSync(fd, typeof content === "string" ? Buffer.from(content) : content);
    fchmodSync(fd, mode);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    try { unlinkSync(tmp); } catch {}
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, dest);
  const dfd = openSync(dir, "r");
  try { fsyncSync(dfd); } finally { closeSync(dfd); }
}

export async function writeFileAtomic(path: string, content: string, mode?: number): Promise<void> {
  writeFileAtomicSync(path, content, mode);
}

/** Open (creating) a file aivm owns for reading and writing without following a link; refuses a non-regular file. */
export function openOwnFile(path: string, mode = 0o600): number {
  let fd: number;
  try {
    fd = openSync(path, O_RDWR | O_CREAT | O_NOFOLLOW, mode);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ELOOP") throw new AivmError("refusing to open", `${path} is a symbolic link, which aivm did not make`, EXIT.FAILED, "remove it (check what put it there), then re-run");
    throw e;
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw new AivmError("refusing to open", `${path} is not a regular file`, EXIT.FAILED, "remove it (check what put it there), then re-run");
  }
  return fd;
}

export function expandHome(p: string, home = process.env.HOME ?? "/root"): string {
  if (p === "~") return home;
  if (p.startsWith("~/")) return join(home, p.slice(2));
  return p;
}
