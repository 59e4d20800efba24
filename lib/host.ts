// The Host seam: everything aivm reads of the machine it runs on (files, stat and realpath, PATH lookups, device
// access, a TCP probe), in one interface. The Runner carries one; tests inject a fake; a remote host is one more
// implementation. Reads only: changes go through the Runner's steps.
import { closeSync, existsSync, lstatSync, openSync, readdirSync, readFileSync, realpathSync, statSync, type Stats } from "node:fs";

export interface FileStat {
  mode: number;
  uid: number;
  gid: number;
  dev: number;
  ino: number;
  size: number;
  mtimeMs: number;
  isDirectory: boolean;
  isFile: boolean;
  isSymbolicLink: boolean;
}

export interface Host {
  /** the environment aivm runs in */
  env: Record<string, string | undefined>;
  uid: number;
  gid: number;
  /** the directory aivm was started in */
  cwd(): string;
  exists(path: string): boolean;
  /** stat (following symlinks), or null when it does not exist or cannot be read */
  stat(path: string): FileStat | null;
  /** lstat (the link itself), or null */
  lstat(path: string): FileStat | null;
  realpath(path: string): string | null;
  readFile(path: string): string | null;
  readDir(path: string): string[] | null;
  /** a program on PATH (and /usr/sbin, /sbin, where Debian keeps some tools), or null */
  which(name: string): string | null;
  /** can this file be opened read-write? null when yes, else the error code (ENOENT, EACCES, ...) */
  openRw(path: string): string | null;
  /** does ip:port accept a TCP connection within ms? */
  tcpOpen(ip: string, port: number, ms: number): Promise<boolean>;
}

function fileStat(s: Stats): FileStat {
  return {
    mode: s.mode, uid: s.uid, gid: s.gid, dev: s.dev, ino: s.ino, size: s.size, mtimeMs: s.mtimeMs,
    isDirectory: s.isDirectory(), isFile: s.isFile(), isSymbolicLink: s.isSymbolicLink(),
  };
}

function attempt<T>(f: () => T): T | null {
  try {
    return f();
  } catch {
    return null;
  }
}

export const realHost: Host = {
  env: process.env,
  uid: process.getuid?.() ?? 0,
  gid: process.getgid?.() ?? 0,
  cwd: () => process.cwd(),
  exists: existsSync,
  stat: (p) => attempt(() => fileStat(statSync(p))),
  lstat: (p) => attempt(() => fileStat(lstatSync(p))),
  realpath: (p) => attempt(() => realpathSync(p)),
  readFile: (p) => attempt(() => readFileSync(p, "utf8")),
  readDir: (p) => attempt(() => readdirSync(p)),
  which: (n) => Bun.which(n, { PATH: `${process.env.PATH ?? ""}:/usr/sbin:/sbin` }),
  openRw(p) {
    try {
      closeSync(openSync(p, "r+"));
      return null;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code ?? "EIO";
    }
  },
  tcpOpen(ip, port, ms) {
    return new Promise((res) => {
      let done = false;
      const finish = (ok: boolean, sock?: { end(): void }) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        try { sock?.end(); } catch {}
        res(ok);
      };
      const timer = setTimeout(() => finish(false), ms);
      Bun.connect({ hostname: ip, port, socket: { open: (s) => finish(true, s), error: () => finish(false), connectError: () => finish(false), data() {} } }).catch(() => finish(false));
    });
  },
};

/** A host that answers from `over` first and from the real machine for everything else (tests). */
export function hostWith(over: Partial<Host>): Host {
  return { ...realHost, ...over };
}
