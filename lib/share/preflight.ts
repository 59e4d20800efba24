// The safety preflight before a host folder is shared: home and secrets directories, after resolving symlinks.
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { isAbsolute, join } from "node:path";
import { real, safe, within } from "./names.ts";
import type { Runner } from "../run.ts";
import { canPrompt } from "../log.ts";
import { UsageError } from "../errors.ts";
import { ask } from "../prompt.ts";
import { log } from "../log.ts";

export const SECRET_DIRS = [".ssh", ".gnupg", ".aws", ".kube", ".docker", ".config/gh", ".password-store"];

export const SECRET_ABS = ["/root", "/etc/ssh"];

/** The home directories that count: $HOME, the passwd home, and the home of the user who ran sudo. */
export function homes(env: Record<string, string | undefined> = process.env): string[] {
  const list = [env.HOME, safe(() => homedir())];
  if (env.SUDO_USER) list.push(passwdHome(env.SUDO_USER));
  return [...new Set(list.filter((h): h is string => !!h && isAbsolute(h) && h !== "/"))];
}

function passwdHome(user: string): string | undefined {
  const text = safe(() => readFileSync("/etc/passwd", "utf8")) ?? "";
  for (const l of text.split("\n")) {
    const f = l.split(":");
    if (f[0] === user && f[5]) return f[5];
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
export async function approveSensitive(runner: Runner, what: string, hostPath: string, o: { homes?: string[]; interactive?: boolean; ask?: (q: string) => Promise<string> } = {}): Promise<void> {
  const hit = sensitiveHit(hostPath, { homes: o.homes ?? homes() });
  if (!hit) return;
  if (runner.yes) {
    log.warn(`${what}: ${hit}; sharing it anyway because of --yes`);
    return;
  }
  if (!(o.interactive ?? canPrompt())) {
    throw new UsageError(what, `refusing: ${hit} (it may hold secrets)`, "type `yes` at the prompt in a terminal, or pass --yes if you really mean it");
  }
  const a = (await (o.ask ?? ask)(`${hit}; it may hold secrets. Type yes to share it with the VM anyway: `)).trim();
  if (a !== "yes") throw new UsageError(what, `refusing: ${hit}`);
  log.warn(`${what}: ${hit}; shared after typed approval`);
}
