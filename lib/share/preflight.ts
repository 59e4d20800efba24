// The safety preflight before a host folder is shared, run on the resolved path at attach time AND every time aivm
// binds a folder (up, restart, session reconcile), because a saved attachment may have been written by anything.
// Refused outright, whatever --yes says: aivm's own state (the config store's directory, vm_root, the image cache,
// the data directory, /var/lib/aivm), their parents and their children. Refused unless the user types `yes` (or
// passes --yes): a home directory itself and its parents, secrets directories, their parents and their children.
// Every path is compared after symlink resolution.
import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import type { Paths, StoreDoc, Vm } from "../config/model.ts";
import { UsageError } from "../errors.ts";
import type { Host } from "../host.ts";
import { log } from "../log.ts";
import type { Runner } from "../run.ts";
import { within } from "./names.ts";

export const SECRET_DIRS = [".ssh", ".gnupg", ".aws", ".kube", ".docker", ".config/gh", ".password-store"];

export const SECRET_ABS = ["/root", "/etc/ssh"];

/** Where aivm keeps host-side state that dnsmasq and nft read, outside any home. */
export const SYSTEM_STATE = "/var/lib/aivm";

/** The home directories that count: $HOME, the passwd home, and the home of the user who ran sudo. */
export function homes(host: Host): string[] {
  const env = host.env;
  const list = [env.HOME, passwdHomeOf(host, (u) => Number(u) === host.uid)];
  if (env.SUDO_USER) list.push(passwdHomeOf(host, (_u, name) => name === env.SUDO_USER));
  return [...new Set(list.filter((h): h is string => !!h && isAbsolute(h) && h !== "/"))];
}

/** The home directory of the first /etc/passwd entry that matches (by uid or by name). */
function passwdHomeOf(host: Host, match: (uid: string, name: string) => boolean): string | undefined {
  for (const l of (host.readFile("/etc/passwd") ?? "").split("\n")) {
    const f = l.split(":");
    if (f[5] && match(f[2] ?? "", f[0] ?? "")) return f[5];
  }
  return undefined;
}

/** realpath of the deepest existing ancestor, plus the rest: a missing ~/.gnupg under a symlinked home still resolves. */
export function resolveThrough(host: Host, p: string): string {
  const abs = resolve(p);
  const r = host.realpath(abs);
  if (r) return r;
  const parent = dirname(abs);
  return parent === abs ? abs : join(resolveThrough(host, parent), basename(abs));
}

/** How `path` relates to a protected directory `d`: the same, a parent of it, or inside it; null when unrelated. */
function relation(p: string, d: string): "is" | "contains" | "inside" | null {
  if (p === d) return "is";
  if (within(d, p)) return "contains";
  if (within(p, d)) return "inside";
  return null;
}

/**
 * Why sharing `path` would expose secrets, or null. Refused: a home directory itself and its parents; a secrets
 * directory, its parents and anything inside it. Every path is compared after symlink resolution.
 */
export function sensitiveHit(path: string, o: { homes: string[]; realpath: (p: string) => string }): string | null {
  const rp = o.realpath;
  const p = rp(path);
  for (const h of o.homes) {
    const home = rp(h);
    if (within(home, p)) return p === home ? `${path} is a home directory` : `${path} contains the home directory ${home}`;
    for (const s of SECRET_DIRS) {
      const d = rp(join(h, s));
      const r = relation(p, d);
      if (r) return r === "is" ? `${path} is the secrets directory ${d}` : r === "contains" ? `${path} contains the secrets directory ${d}` : `${path} is inside the secrets directory ${d}`;
    }
  }
  for (const s of SECRET_ABS) {
    const d = rp(s);
    const r = relation(p, d);
    if (r) return r === "is" ? `${path} is ${d}` : r === "contains" ? `${path} contains ${d}` : `${path} is inside ${d}`;
  }
  return null;
}

/** aivm's own state: what a guest must never be able to read or write. */
export function stateDirs(host: Host, paths: Paths, configPath: string): { dir: string; what: string }[] {
  const data = host.env.XDG_DATA_HOME && isAbsolute(host.env.XDG_DATA_HOME) ? host.env.XDG_DATA_HOME : join(host.env.HOME ?? "/root", ".local/share");
  return [
    { dir: dirname(configPath), what: "the config store's directory" },
    { dir: paths.vmRoot, what: "aivm's VM directories (disks, seeds with the guests' host keys, pinned known_hosts)" },
    { dir: paths.imageCache, what: "aivm's image cache" },
    { dir: join(data, "aivm"), what: "aivm's data directory" },
    { dir: SYSTEM_STATE, what: "aivm's host state (DNS allow-lists, logs)" },
  ];
}

/** Why sharing `path` would hand the guest aivm's own state, or null. Never allowed, whatever --yes says. */
export function stateHit(host: Host, path: string, dirs: { dir: string; what: string }[]): string | null {
  const p = resolveThrough(host, path);
  for (const { dir, what } of dirs) {
    const d = resolveThrough(host, dir);
    const r = relation(p, d);
    if (r) return `${path} ${r === "is" ? "is" : r === "contains" ? "contains" : "is inside"} ${what} (${d})`;
  }
  return null;
}

export interface PreflightContext { configPath: string; paths: Paths; homes?: string[] }

export interface Verdict {
  /** never shared, whatever the user says */
  refused?: string;
  /** shared only with consent */
  sensitive?: string;
}

/** The verdict on a folder (pure but for the host's realpath and passwd). */
export function judgeFolder(host: Host, hostPath: string, ctx: PreflightContext): Verdict {
  const refused = stateHit(host, hostPath, stateDirs(host, ctx.paths, ctx.configPath));
  if (refused) return { refused };
  const sensitive = sensitiveHit(hostPath, { homes: ctx.homes ?? homes(host), realpath: (p) => resolveThrough(host, p) });
  return sensitive ? { sensitive } : {};
}

/** At attach time: refuse aivm's state outright; refuse a sensitive folder unless --yes (logged) or a typed `yes`. */
export async function approveFolder(runner: Runner, what: string, hostPath: string, ctx: PreflightContext): Promise<void> {
  const v = judgeFolder(runner.host, hostPath, ctx);
  if (v.refused) throw new UsageError(what, `refusing: ${v.refused}; a guest must never reach aivm's own state (--yes does not change this)`);
  if (!v.sensitive) return;
  if (runner.yes) {
    log.warn(`${what}: ${v.sensitive}; sharing it anyway because of --yes`);
    return;
  }
  if (!runner.interactive) {
    throw new UsageError(what, `refusing: ${v.sensitive} (it may hold secrets)`, "type `yes` at the prompt in a terminal, or pass --yes if you really mean it");
  }
  const a = await runner.ask(what, `${v.sensitive}; it may hold secrets. Type yes to share it with the VM anyway: `);
  if (a !== "yes") throw new UsageError(what, `refusing: ${v.sensitive}`);
  log.warn(`${what}: ${v.sensitive}; shared after typed approval`);
}

/**
 * Before a saved attachment is bound (vm up, restart, session reconcile): the same preflight on the path it
 * resolves to now. Returns whether to bind it; a refusal or a sensitive folder without consent is one warning line.
 */
export async function approveSaved(runner: Runner, vm: Vm, hostPath: string, ctx: PreflightContext): Promise<boolean> {
  const v = judgeFolder(runner.host, hostPath, ctx);
  if (v.refused) {
    log.warn(`${vm.name}: not binding the saved attachment ${hostPath}: ${v.refused}`);
    return false;
  }
  if (!v.sensitive) return true;
  if (runner.yes) {
    log.warn(`${vm.name}: ${v.sensitive}; binding the saved attachment because of --yes`);
    return true;
  }
  if (runner.interactive) {
    const a = await runner.ask("vm up", `${vm.name} has a saved attachment: ${v.sensitive}; it may hold secrets. Type yes to bind it: `);
    if (a === "yes") return true;
  }
  log.warn(`${vm.name}: not binding the saved attachment ${hostPath}: ${v.sensitive} (approve with --yes, or detach it: aivm share detach)`);
  return false;
}

/**
 * The config store decides what is shared and what the firewall lets through: a store inside a folder some VM can
 * write would let that guest rewrite it. Returns why aivm must refuse to act, or null.
 */
export function storeExposure(host: Host, doc: StoreDoc, configPath: string): string | null {
  const store = resolveThrough(host, configPath);
  for (const v of doc.vms ?? []) {
    for (const a of v.attachments ?? []) {
      if (!a?.host_path || a.access === "ro" || a.mode === "git") continue;
      if (within(store, resolveThrough(host, a.host_path))) return `the config store ${configPath} lies inside ${a.host_path}, which ${v.name} can write (${a.mode}, rw): the guest could rewrite what aivm shares and allows`;
    }
  }
  return null;
}
