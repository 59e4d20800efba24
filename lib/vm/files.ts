// The per-VM directory: every file aivm keeps for one VM, the checks before touching it, the one per-VM lock.
import { existsSync, readdirSync, readFileSync, realpathSync, rmdirSync, unlinkSync } from "node:fs";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import type { Vm } from "../config/model.ts";
import { AivmError, EXIT } from "../errors.ts";
import { acquireLock } from "../lock.ts";
import { log } from "../log.ts";
import { ipv4ToInt } from "../validate.ts";

export interface VmFiles {
  dir: string; disk: string; seed: string; hostKey: string; hostKeyPub: string;
  knownHosts: string; consoleLog: string; nvram: string; ipCache: string; lock: string;
}

/** Everything aivm keeps for one VM lives under vm.dir. */
export function vmFiles(vm: Vm): VmFiles {
  const d = vm.dir;
  return {
    dir: d,
    disk: join(d, "disk.qcow2"),
    seed: join(d, "seed.img"),
    hostKey: join(d, "ssh_host_ed25519_key"),
    hostKeyPub: join(d, "ssh_host_ed25519_key.pub"),
    knownHosts: join(d, "known_hosts"),
    consoleLog: join(d, "console.log"),
    nvram: join(d, "nvram.fd"),
    ipCache: join(d, "ip"),
    lock: join(d, ".lock"),
  };
}

/** The files a created VM cannot do without (the console log, nvram and ip cache appear later). */
export function requiredFiles(f: VmFiles): string[] {
  return [f.disk, f.seed, f.hostKey, f.hostKeyPub, f.knownHosts];
}

/** Why vm.dir may not be created or removed: it must lie strictly inside vm_root (symlinks resolved). */
export function vmDirProblem(vm: Vm): string | undefined {
  const inside = (root: string, dir: string) => {
    const rel = relative(root, dir);
    return rel !== "" && !rel.startsWith("..") && !isAbsolute(rel);
  };
  const root = resolve(vm.paths.vmRoot);
  const dir = resolve(vm.dir);
  if (root === "/" || !inside(root, dir)) return `${vm.dir} is not strictly inside vm_root ${vm.paths.vmRoot}`;
  try {
    const realDir = realpathSync(dir);
    if (!inside(realpathSync(root), realDir)) return `${vm.dir} resolves to ${realDir}, outside vm_root ${vm.paths.vmRoot}`;
  } catch {}
  return undefined;
}

export function checkVmDir(vm: Vm): void {
  const p = vmDirProblem(vm);
  if (p) throw new AivmError(`vm ${vm.name}`, `refusing to touch the VM directory: ${p}`, EXIT.FAILED);
}

export function readKey(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null;
  }
}

export function isFreshDir(host: { exists(p: string): boolean }, f: VmFiles): boolean {
  if (!host.exists(f.dir)) return true;
  try {
    return readdirSync(f.dir).every((e) => e === ".lock");
  } catch {
    return false;
  }
}

/** The ip file `vm wait` keeps: the address, or why there is none (missing, or not an IPv4 address). */
export type IpFile = { ip: string } | { missing: true; path: string } | { malformed: string; path: string };

export function readIpFile(vm: Vm): IpFile {
  const path = vmFiles(vm).ipCache;
  const raw = readKey(path);
  if (raw === null) return { missing: true, path };
  const t = raw.trim();
  return ipv4ToInt(t) !== undefined ? { ip: t } : { malformed: t.length > 40 ? `${t.slice(0, 40)}...` : t, path };
}

/** Why there is no usable address, for messages. */
export function ipFileProblem(f: IpFile): string {
  if ("ip" in f) return "";
  return "missing" in f ? `${f.path} is missing` : `${f.path} holds ${JSON.stringify(f.malformed)}, not an IPv4 address`;
}

/** The IP last seen for this VM, or null. */
export function cachedIp(vm: Vm): string | null {
  const f = readIpFile(vm);
  return "ip" in f ? f.ip : null;
}

export interface VmLockOptions {
  /** --dry-run: take no lock and create nothing */
  dryRun?: boolean;
  /** when vm.dir does not exist yet, create it for the lock (false: run without the lock, creating nothing) */
  create?: boolean;
  /** how long to wait for another aivm process working on this VM (default 15 min); 0 fails at once */
  waitMs?: number;
  /** what is waiting, for the progress line */
  what?: string;
}

/**
 * The one per-VM lock around everything that changes a VM. A second aivm process working on the same VM waits for
 * the first (a progress line on stderr every few seconds) and then finds what is left to do. Taking the lock may
 * create vm.dir; when the work leaves it holding only the lock file, it is removed again.
 */
export async function withVmLock<T>(vm: Vm, fn: () => Promise<T>, o: VmLockOptions = {}): Promise<T> {
  if (o.dryRun) return fn();
  const problem = vmDirProblem(vm);
  if (problem) throw new AivmError(`vm ${vm.name}`, `refusing to touch the VM directory: ${problem}`);
  const f = vmFiles(vm);
  if (o.create === false && !existsSync(f.dir)) return fn();
  // the directories the lock file is about to create (vm.dir, and vm_root when it is new too)
  const made: string[] = [];
  for (let d = f.dir; !existsSync(d) && d !== dirname(d); d = dirname(d)) made.push(d);
  const release = await acquireVmLock(vm, f.lock, o);
  try {
    return await fn();
  } finally {
    release();
    if (made.length) {
      try {
        if (readdirSync(f.dir).every((e) => e === ".lock")) {
          try { unlinkSync(f.lock); } catch {}
          for (const d of made) rmdirSync(d); // innermost first; stops at the first non-empty one
        }
      } catch {}
    }
  }
}

async function acquireVmLock(vm: Vm, lock: string, o: VmLockOptions): Promise<() => void> {
  const waitMs = o.waitMs ?? 15 * 60_000;
  const t0 = Date.now();
  let noted = 0;
  for (;;) {
    try {
      return acquireLock(lock, { waitMs: 0, what: `${o.what ?? "vm"} ${vm.name}`, reentrant: true });
    } catch (e) {
      if (!(e instanceof AivmError) || /held by this process/.test(e.why) || Date.now() - t0 >= waitMs) throw e;
      if (Date.now() - noted >= 5000) {
        noted = Date.now();
        log.info(`${o.what ?? "aivm"}: waiting for another aivm process working on ${vm.name} (${e.why.replace(/ holds .*$/, "")}; ${Math.round((Date.now() - t0) / 1000)} s)`);
      }
    }
    await Bun.sleep(200);
  }
}

/** The serial console log, or an error saying why it cannot be read. */
export function readConsoleLog(vm: Vm): string {
  const path = vmFiles(vm).consoleLog;
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new AivmError(`vm console-log ${vm.name}`, `no console log at ${path}`, EXIT.FAILED, "it appears when the VM first starts: `aivm vm up`");
    throw new AivmError(`vm console-log ${vm.name}`, `cannot read ${path}: ${code ?? (e as Error).message}`, EXIT.FAILED, code === "EACCES" ? "libvirt writes it as root: re-run with sudo" : undefined);
  }
}
