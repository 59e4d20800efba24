// The safety preflight before a host folder is shared: home and secrets directories, after resolving symlinks.
import { isAbsolute, join } from "node:path";
import { real, within } from "./names.ts";
import type { Host } from "../host.ts";
import type { Runner } from "../run.ts";
import { UsageError } from "../errors.ts";
import { log } from "../log.ts";

export const SECRET_DIRS = [".ssh", ".gnupg", ".aws", ".kube", ".docker", ".config/gh", ".password-store"];

export const SECRET_ABS = ["/root", "/etc/ssh"];

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

/**
 * Why sharing `path` (already resolved) would expose secrets, or null. Refused: a home directory itself and its
 * parents; a secrets directory, its parents and anything inside it. Every path is compared after symlink resolution.
 */
export function sensitiveHit(path: string, o: { homes: string[]; realpath?: (p: string) => string }): string | null {
  const rp = o.realpath ?? real;
  const p = rp(path);
  for (const h of o.homes) {
    const home = rp(h);
    if (within(home, p)) return p === home ? `${path} is a home directory` : `${path} contains the home directory ${home}`;
    for (const s of SECRET_DIRS) {
      const d = rp(join(h, s));
      if (p === d) return `${path} is the secrets directory ${d}`;
      if (within(d, p)) return `${path} contains the secrets directory ${d}`;
      if (within(p, d)) return `${path} is inside the secrets directory ${d}`;
    }
  }
  for (const s of SECRET_ABS) {
    const d = rp(s);
    if (p === d) return `${path} is ${d}`;
    if (within(d, p)) return `${path} contains ${d}`;
    if (within(p, d)) return `${path} is inside ${d}`;
  }
  return null;
}

/** Refuse a sensitive folder unless --yes (logged) or the user types `yes`. */
export async function approveSensitive(runner: Runner, what: string, hostPath: string, o: { homes?: string[] } = {}): Promise<void> {
  const hit = sensitiveHit(hostPath, { homes: o.homes ?? homes(runner.host) });
  if (!hit) return;
  if (runner.yes) {
    log.warn(`${what}: ${hit}; sharing it anyway because of --yes`);
    return;
  }
  if (!runner.interactive) {
    throw new UsageError(what, `refusing: ${hit} (it may hold secrets)`, "type `yes` at the prompt in a terminal, or pass --yes if you really mean it");
  }
  const a = await runner.ask(what, `${hit}; it may hold secrets. Type yes to share it with the VM anyway: `);
  if (a !== "yes") throw new UsageError(what, `refusing: ${hit}`);
  log.warn(`${what}: ${hit}; shared after typed approval`);
}
