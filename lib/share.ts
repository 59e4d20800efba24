// Host folders in the VM: `shared-root` (one virtiofs device per VM exporting <vm.dir>/export; each folder is a host
// bind mount under it and a guest bind mount at guest_dst), `shared` (one cold-plugged virtiofs device per folder) and
// `git` (a guest-local clone moved with explicit push/pull). Planners are pure; apply functions take the Runner first.
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, realpathSync, statSync } from "node:fs";
import { homedir, userInfo } from "node:os";
import { basename, dirname, isAbsolute, join, normalize, relative, resolve } from "node:path";
import type { Access, AttachmentDoc, Mode, StoreDoc, Vm } from "./config.ts";
import type { DomainSpec } from "./domain.ts";
import { AivmError, EXIT, UsageError } from "./errors.ts";
import { canPrompt, log } from "./log.ts";
import { ask } from "./prompt.ts";
import { shellQuote, type Action, type Runner } from "./run.ts";
import { sshArgv } from "./ssh-config.ts";

// ---------- names and places ----------

/** The one virtiofs tag every VM has: its export root. */
export const ROOT_TAG = "aivm-root";
/** Where the guest mounts the root tag. */
export const GUEST_ROOT = "/mnt/aivm-root";

/** The VM's export root: the source of the aivm-root device; attached folders are bind-mounted under it. */
export function exportRoot(vm: Vm): string {
  return join(vm.dir, "export");
}

/** Where a read-only bind is made and remounted ro before it is bound into the export (see hostBindPlan). */
export function stageRoot(vm: Vm): string {
  return join(vm.dir, "stage");
}

/** A stable, filesystem-safe name for a host folder: sanitized basename + 10 hex of sha256(resolved path). */
export function shareToken(hostPath: string): string {
  const base = basename(hostPath).normalize("NFKD").replace(/[^A-Za-z0-9_.-]+/g, "_").replace(/^[._-]+|_+$/g, "").slice(0, 24);
  const hash = createHash("sha256").update(hostPath).digest("hex").slice(0, 10);
  return `${base || "root"}-${hash}`;
}

/** The virtiofs tag of a `shared` (per-folder) device: at most 36 characters. */
export function sharedTag(hostPath: string): string {
  const hash = createHash("sha256").update(hostPath).digest("hex").slice(0, 10);
  const base = shareToken(hostPath).slice(0, -11).slice(0, 36 - 6 - 11);
  return `aivm-${base ? base + "-" : ""}${hash}`;
}

/** The virtiofs devices a VM's domain carries: the export root, plus one per `shared` attachment. */
export function vmFilesystems(vm: Vm): DomainSpec["filesystems"] {
  return [
    { source: exportRoot(vm), tag: ROOT_TAG, readonly: false },
    ...vm.attachments.filter((a) => a.mode === "shared").map((a) => ({ source: a.host_path, tag: sharedTag(a.host_path), readonly: false })),
  ];
}

// ---------- input ----------

export const MODES: Mode[] = ["shared-root", "shared", "git"];
export const ACCESS: Access[] = ["rw", "ro"];
const FORBIDDEN_GUEST = ["/proc", "/sys", "/dev"];
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;

export function parseMode(v: unknown): Mode | undefined {
  if (v === undefined || v === "") return undefined;
  if (!MODES.includes(v as Mode)) throw new UsageError("--mode", `${JSON.stringify(v)} is not one of ${MODES.join(", ")}`);
  return v as Mode;
}

export function parseAccess(v: unknown): Access | undefined {
  if (v === undefined || v === "") return undefined;
  if (!ACCESS.includes(v as Access)) throw new UsageError("--access", `${JSON.stringify(v)} is not rw or ro`);
  return v as Access;
}

/** Why a guest path is refused, or undefined. */
export function guestDstProblem(p: string): string | undefined {
  if (CONTROL.test(p)) return "contains control characters";
  if (!isAbsolute(p)) return "is not an absolute path";
  const n = normalize(p).replace(/\/+$/, "") || "/";
  if (n === "/") return "is the guest's root directory";
  for (const f of [...FORBIDDEN_GUEST, GUEST_ROOT]) if (n === f || n.startsWith(f + "/")) return `is under ${f}`;
  return undefined;
}

/** The resolved host folder for DIR: exit 2 when it does not exist or is not a directory. */
export function hostDir(what: string, dir: string): string {
  const abs = resolve(dir);
  let st;
  try {
    st = statSync(abs);
  } catch {
    throw new UsageError(what, `${dir}: no such directory`);
  }
  if (!st.isDirectory()) throw new UsageError(what, `${dir} is not a directory`);
  if (CONTROL.test(abs)) throw new UsageError(what, `${dir}: the path contains control characters`);
  return realpathSync(abs);
}

export function findAttachment(vm: Vm, hostPath: string): AttachmentDoc | undefined {
  return vm.attachments.find((a) => a.host_path === hostPath);
}

/** The attachment whose folder holds hostPath (the innermost), and the matching guest directory. */
export function containingAttachment(vm: Vm, hostPath: string): { att: AttachmentDoc; cwd: string } | undefined {
  const att = vm.attachments.filter((a) => within(hostPath, a.host_path)).sort((a, b) => b.host_path.length - a.host_path.length)[0];
  if (!att) return undefined;
  const rel = relative(att.host_path, hostPath);
  return { att, cwd: rel ? join(att.guest_dst, rel) : att.guest_dst };
}

/**
 * The attachment to make for a folder: the saved record wins where an option is omitted; an explicit option that
 * differs from the saved one is an error (detach and re-attach). Pure apart from nothing: hostPath is already resolved.
 */
export function planAttachment(vm: Vm, hostPath: string, o: { mode?: Mode; access?: Access; guestDst?: string }): { att: AttachmentDoc; saved: boolean } {
  const saved = findAttachment(vm, hostPath);
  const guestDst = o.guestDst !== undefined ? normalize(o.guestDst).replace(/(.)\/+$/, "$1") : undefined;
  if (guestDst !== undefined) {
    const p = guestDstProblem(o.guestDst!);
    if (p) throw new UsageError("--guest-dst", `${o.guestDst} ${p}`);
  }
  if (saved) {
    const diff: string[] = [];
    if (o.mode && o.mode !== saved.mode) diff.push(`mode ${saved.mode}`);
    if (o.access && o.access !== saved.access) diff.push(`access ${saved.access}`);
    if (guestDst && guestDst !== saved.guest_dst) diff.push(`guest path ${saved.guest_dst}`);
    if (diff.length) {
      throw new UsageError("share attach", `${hostPath} is already attached to ${vm.name} with ${diff.join(", ")}`, `to change it: aivm share detach ${shellQuote(hostPath)} --vm ${vm.name}, then attach again`);
    }
    return { att: saved, saved: true };
  }
  const mode = o.mode ?? "shared-root";
  const access = o.access ?? "rw";
  if (mode === "shared" && access === "ro") {
    throw new UsageError("share attach", "--mode shared cannot be read-only: libvirt 9 refuses <readonly/> on virtiofs devices", "use --mode shared-root --access ro (enforced by a read-only bind mount on the host)");
  }
  if (mode === "git" && access === "ro") throw new UsageError("share attach", "--mode git has no read-only form (the guest clone is the guest's own copy)");
  const dst = guestDst ?? hostPath;
  const p = guestDstProblem(dst);
  if (p) throw new UsageError("share attach", `guest path ${dst} ${p}`, "pass --guest-dst PATH");
  const clash = vm.attachments.find((a) => a.guest_dst === dst);
  if (clash) throw new UsageError("share attach", `guest path ${dst} is already used by ${clash.host_path}`, "pass --guest-dst PATH");
  return { att: { host_path: hostPath, mode, access, guest_dst: dst }, saved: false };
}

// ---------- store ----------

export function withAttachment(doc: StoreDoc, vmName: string, att: AttachmentDoc): StoreDoc {
  const rec = doc.vms?.find((v) => v.name === vmName);
  if (!rec) throw new AivmError("share", `${vmName} is not recorded in the config store`);
  const list = (rec.attachments ?? []).filter((a) => a.host_path !== att.host_path);
  rec.attachments = [...list, att];
  return doc;
}

export function withoutAttachment(doc: StoreDoc, vmName: string, hostPath: string): StoreDoc {
  const rec = doc.vms?.find((v) => v.name === vmName);
  if (rec?.attachments) {
    rec.attachments = rec.attachments.filter((a) => a.host_path !== hostPath);
    if (rec.attachments.length === 0) delete rec.attachments;
  }
  return doc;
}

// ---------- safety preflight ----------

export const SECRET_DIRS = [".ssh", ".gnupg", ".aws", ".kube", ".docker", ".config/gh", ".password-store"];
export const SECRET_ABS = ["/root", "/etc/ssh"];

/** The home directories that count: $HOME, the passwd home, and the home of the user who ran sudo. */
export function homes(env: Record<string, string | undefined> = process.env): string[] {
  const list = [env.HOME, safe(() => homedir())];
  if (env.SUDO_USER) list.push(passwdHome(env.SUDO_USER));
  return [...new Set(list.filter((h): h is string => !!h && isAbsolute(h) && h !== "/"))];
}

function safe<T>(f: () => T): T | undefined {
  try {
    return f();
  } catch {
    return undefined;
  }
}

function passwdHome(user: string): string | undefined {
  const text = safe(() => readFileSync("/etc/passwd", "utf8")) ?? "";
  for (const l of text.split("\n")) {
    const f = l.split(":");
    if (f[0] === user && f[5]) return f[5];
  }
  return undefined;
}

/** realpath of the deepest existing ancestor, plus the rest: a missing ~/.gnupg under a symlinked home still resolves. */
const real = (p: string): string => {
  const abs = resolve(p);
  const r = safe(() => realpathSync(abs));
  if (r) return r;
  const parent = dirname(abs);
  return parent === abs ? abs : join(real(parent), basename(abs));
};
const within = (child: string, parent: string) => {
  const r = relative(parent, child);
  return r === "" || (!r.startsWith("..") && !isAbsolute(r));
};

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

/** Saved attachments that are a parent or a child of hostPath (same folder excluded). */
export function overlapping(vm: Vm, hostPath: string): AttachmentDoc[] {
  return vm.attachments.filter((a) => a.host_path !== hostPath && (within(a.host_path, hostPath) || within(hostPath, a.host_path)));
}

// ---------- host mounts ----------

export interface MountEntry { target: string; root: string; options: string; optional: string; fstype: string; source: string }

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** /proc/self/mountinfo by mount point (the last mount on a path wins, as the kernel shows it). */
export function parseMountinfo(text: string): Map<string, MountEntry> {
  const map = new Map<string, MountEntry>();
  for (const line of text.split("\n")) {
    const parts = line.split(" - ");
    if (parts.length < 2) continue;
    const a = parts[0]!.split(" ");
    const b = parts[1]!.split(" ");
    if (a.length < 6) continue;
    map.set(unescapeMount(a[4]!), { target: unescapeMount(a[4]!), root: unescapeMount(a[3]!), options: a[5]!, optional: a.slice(6).join(" "), fstype: b[0] ?? "", source: unescapeMount(b[1] ?? "") });
  }
  return map;
}

export function readMounts(): Map<string, MountEntry> {
  return parseMountinfo(safe(() => readFileSync("/proc/self/mountinfo", "utf8")) ?? "");
}

const isRo = (m: MountEntry) => m.options.split(",").includes("ro");

/** Same file (device and inode)? */
export type SameFile = (a: string, b: string) => boolean;
export const sameFile: SameFile = (a, b) => {
  const x = safe(() => statSync(a));
  const y = safe(() => statSync(b));
  return !!x && !!y && x.dev === y.dev && x.ino === y.ino;
};

/**
 * The export root as a shared mount point (a bind onto itself, made shared), so binds added under it later reach
 * virtiofsd's own mount namespace (its copy is a slave of this one). Must happen before the VM starts.
 */
export function exportMountPlan(vm: Vm, mounts: Map<string, MountEntry>): Action[] {
  const exp = exportRoot(vm);
  const m = mounts.get(exp);
  const actions: Action[] = [];
  if (!m) actions.push({ kind: "run", argv: ["mount", "--bind", exp, exp], privileged: true });
  if (!m || !/\bshared:\d+/.test(m.optional)) actions.push({ kind: "run", argv: ["mount", "--make-shared", exp], privileged: true });
  return actions;
}

/**
 * Bind the folder onto <export>/<token>. Read-only binds are made and remounted ro in the stage directory first and
 * only then bound into the export: a remount does not propagate to other mount namespaces, but a new bind copies
 * the ro flag, so virtiofsd's copy is read-only from its first moment.
 * `null`: the right bind is already there. A wrong mount on the target is replaced.
 */
export function hostBindPlan(vm: Vm, att: AttachmentDoc, mounts: Map<string, MountEntry>, same: SameFile = sameFile): Action[] | null {
  const target = join(exportRoot(vm), shareToken(att.host_path));
  const m = mounts.get(target);
  if (m && same(target, att.host_path) && isRo(m) === (att.access === "ro")) return null;
  const actions: Action[] = [];
  if (m) actions.push({ kind: "run", argv: ["umount", target], privileged: true });
  actions.push({ kind: "run", argv: ["mkdir", "-p", target], privileged: true });
  if (att.access === "ro") {
    const stage = join(stageRoot(vm), shareToken(att.host_path));
    actions.push(
      { kind: "run", argv: ["mkdir", "-p", stage], privileged: true },
      { kind: "run", argv: ["mount", "--bind", att.host_path, stage], privileged: true },
      { kind: "run", argv: ["mount", "-o", "remount,bind,ro", stage], privileged: true },
      { kind: "run", argv: ["mount", "--bind", stage, target], privileged: true },
      { kind: "run", argv: ["umount", stage], privileged: true },
      { kind: "run", argv: ["rmdir", stage], privileged: true },
    );
  } else {
    actions.push({ kind: "run", argv: ["mount", "--bind", att.host_path, target], privileged: true });
  }
  return actions;
}

/** The pids of the virtiofsd processes serving this VM's export root (from /proc; empty when none or not visible). */
export function virtiofsdPids(vm: Vm, proc = "/proc"): number[] {
  const want = `source=${exportRoot(vm)}`;
  const pids: number[] = [];
  for (const d of safe(() => readdirSync(proc)) ?? []) {
    if (!/^\d+$/.test(d)) continue;
    const cmd = safe(() => readFileSync(join(proc, d, "cmdline"), "utf8"))?.split("\0") ?? [];
    if (cmd[0]?.endsWith("virtiofsd") && cmd.some((a) => a === want || a.endsWith(want) || a.includes(`${want},`))) pids.push(Number(d));
  }
  return pids;
}

/**
 * Does the running virtiofsd see the folder at <export>/<token>? It lives in its own mount namespace: a bind made
 * after it started reaches it only when the export root was a shared mount before it started. null: cannot tell.
 */
export function virtiofsdSees(vm: Vm, att: AttachmentDoc, proc = "/proc"): boolean | null {
  const pids = virtiofsdPids(vm, proc);
  if (!pids.length) return null;
  const seen = safe(() => statSync(join(proc, String(pids[pids.length - 1]), "root", shareToken(att.host_path))));
  const host = safe(() => statSync(att.host_path));
  if (!seen || !host) return seen ? null : false;
  return seen.dev === host.dev && seen.ino === host.ino;
}

/** Undo the host bind: unmount (if mounted) and remove the empty mount point. */
export function hostUnbindPlan(vm: Vm, att: AttachmentDoc, mounts: Map<string, MountEntry>): Action[] {
  const target = join(exportRoot(vm), shareToken(att.host_path));
  const actions: Action[] = [];
  if (mounts.has(target)) actions.push({ kind: "run", argv: ["umount", target], privileged: true });
  if (existsSync(target)) actions.push({ kind: "run", argv: ["rmdir", target], privileged: true });
  return actions;
}

async function runActions(runner: Runner, actions: Action[], what: string): Promise<void> {
  for (const a of actions) {
    if (a.kind === "run") await runner.exec(a.argv, { privileged: a.privileged, what });
  }
}

/** Every mount point under dir (deepest first), from a mount table. */
export function mountsUnder(dir: string, mounts: Map<string, MountEntry>): string[] {
  return [...mounts.keys()].filter((t) => within(t, dir)).sort((a, b) => b.split("/").length - a.split("/").length || b.length - a.length);
}

/**
 * Before vm.dir is removed: unmount the folder binds and the export root, so a recursive delete can never reach
 * into a host folder. Refuses (exit 1) when anything stays mounted.
 */
export async function releaseVmMounts(runner: Runner, vm: Vm, read = readMounts): Promise<void> {
  for (const t of mountsUnder(vm.dir, read())) await runner.exec(["umount", t], { privileged: true, what: `unmount ${t}` });
  if (runner.dryRun) return;
  const left = mountsUnder(vm.dir, read());
  if (left.length) throw new AivmError(`vm ${vm.name}`, `still mounted under ${vm.dir}: ${left.join(", ")}; not removing it`, EXIT.FAILED, "unmount them (umount -l), then retry");
}

/** Make the export root a shared mount (idempotent). Called before the VM starts. */
export async function ensureExportMount(runner: Runner, vm: Vm, mounts = readMounts()): Promise<boolean> {
  const actions = exportMountPlan(vm, mounts);
  if (!existsSync(exportRoot(vm))) await runner.exec(["install", "-d", "-m", "0755", exportRoot(vm)], { what: "create the export root" });
  await runActions(runner, actions, `share: export root ${exportRoot(vm)}`);
  return actions.length > 0;
}

export async function ensureHostBind(runner: Runner, vm: Vm, att: AttachmentDoc, mounts = readMounts()): Promise<"bound" | "unchanged"> {
  const plan = hostBindPlan(vm, att, mounts);
  if (!plan) return "unchanged";
  await runActions(runner, plan, `share: bind ${att.host_path}`);
  return "bound";
}

/**
 * Before a VM starts (vm up, aivm up, code, ssh): the export root as a shared mount and the host binds of its saved
 * shared-root attachments (gone after a host reboot). Failures warn; they do not block the start.
 */
export async function restoreHostBinds(runner: Runner, vm: Vm): Promise<string[]> {
  const restored: string[] = [];
  if (!existsSync(exportRoot(vm))) return restored; // a VM made before shared-root existed has no export root
  try {
    await ensureExportMount(runner, vm);
  } catch (e) {
    log.warn(`share: could not prepare ${exportRoot(vm)}: ${(e as Error).message}`);
    return restored;
  }
  const mounts = readMounts();
  for (const att of vm.attachments.filter((a) => a.mode === "shared-root")) {
    if (!existsSync(att.host_path)) {
      log.warn(`share: ${att.host_path} is gone; not restoring it (aivm share detach ${shellQuote(att.host_path)})`);
      continue;
    }
    try {
      if ((await ensureHostBind(runner, vm, att, mounts)) === "bound") restored.push(att.host_path);
    } catch (e) {
      log.warn(`share: could not restore ${att.host_path}: ${(e as Error).message}`);
    }
  }
  return restored;
}

// ---------- guest side ----------

/** A path as an /etc/fstab field (space, tab, newline and backslash octal-escaped). */
export function fstabEscape(p: string): string {
  return p.replace(/[\\ \t\n]/g, (c) => "\\" + c.charCodeAt(0).toString(8).padStart(3, "0"));
}

export function fstabRootLine(): string {
  return `${ROOT_TAG} ${GUEST_ROOT} virtiofs defaults,nofail 0 0`;
}

/** The guest fstab line that restores an attachment at boot. */
export function fstabLine(att: AttachmentDoc): string {
  if (att.mode === "shared") return `${sharedTag(att.host_path)} ${fstabEscape(att.guest_dst)} virtiofs ${att.access === "ro" ? "ro," : ""}nofail 0 0`;
  const src = `${GUEST_ROOT}/${shareToken(att.host_path)}`;
  return `${src} ${fstabEscape(att.guest_dst)} none bind,${att.access === "ro" ? "ro," : ""}nofail,x-systemd.requires-mounts-for=${GUEST_ROOT} 0 0`;
}

/**
 * Runs as root in the guest (sudo -n sh -c SCRIPT aivm ...): mount the root tag if needed, bind (or mount the shared
 * tag) at dst, enforce the access, and keep exactly one fstab line for it. Arguments are data, never code.
 * $1 kind (root|tag) $2 source tag $3 source dir in the guest ("" for tag) $4 dst $5 access $6 fstab key $7 fstab line
 */
export const GUEST_MOUNT_SCRIPT = `set -eu
kind=$1 tag=$2 src=$3 dst=$4 acc=$5 key=$6 line=$7
if [ "$kind" = root ]; then
  if ! mountpoint -q ${GUEST_ROOT}; then
    mkdir -p ${GUEST_ROOT}
    mount -t virtiofs ${ROOT_TAG} ${GUEST_ROOT}
  fi
  grep -qxF '${fstabRootLine()}' /etc/fstab || echo '${fstabRootLine()}' >> /etc/fstab
  [ -d "$src" ] || { echo "aivm: $src is missing in the guest (the host bind is not visible)" >&2; exit 3; }
fi
if mountpoint -q "$dst"; then
  if [ "$kind" = root ] && [ "$(stat -c %d:%i "$dst")" != "$(stat -c %d:%i "$src")" ]; then umount "$dst"; fi
fi
if ! mountpoint -q "$dst"; then
  mkdir -p "$dst"
  if [ "$kind" = root ]; then mount --bind "$src" "$dst"; else mount -t virtiofs "$tag" "$dst"; fi
fi
if [ "$kind" = root ]; then mount -o "remount,bind,$acc" "$dst"; fi
tmp=/etc/fstab.aivm.$$
awk -v k="$key" '$1 != k' /etc/fstab > "$tmp"
printf '%s\\n' "$line" >> "$tmp"
if cmp -s "$tmp" /etc/fstab; then rm -f "$tmp"; else cat "$tmp" > /etc/fstab; rm -f "$tmp"; fi
`;

/**
 * $1 dst $2 fstab key. Unmount dst (if mounted) and drop its fstab line. Then drop the guest's clean dentry and inode
 * caches: the guest then FORGETs the folder's inodes and virtiofsd closes the files it held open in it, which
 * would otherwise keep the host bind busy.
 */
export const GUEST_UNMOUNT_SCRIPT = `set -eu
dst=$1 key=$2
if mountpoint -q "$dst"; then umount "$dst"; fi
sync; echo 2 > /proc/sys/vm/drop_caches
tmp=/etc/fstab.aivm.$$
awk -v k="$key" '$1 != k' /etc/fstab > "$tmp"
if cmp -s "$tmp" /etc/fstab; then rm -f "$tmp"; else cat "$tmp" > /etc/fstab; rm -f "$tmp"; fi
`;

/** The fstab first field that identifies an attachment's line. */
export function fstabKey(att: AttachmentDoc): string {
  return att.mode === "shared" ? sharedTag(att.host_path) : `${GUEST_ROOT}/${shareToken(att.host_path)}`;
}

/** The arguments of GUEST_MOUNT_SCRIPT for an attachment. */
export function guestMountArgs(att: AttachmentDoc): string[] {
  const root = att.mode === "shared-root";
  return [root ? "root" : "tag", root ? ROOT_TAG : sharedTag(att.host_path), root ? `${GUEST_ROOT}/${shareToken(att.host_path)}` : "", att.guest_dst, att.access, fstabKey(att), fstabLine(att)];
}

/** A remote command (ssh joins words with spaces and the guest shell splits them again): every word quoted. */
export function remoteCommand(argv: string[]): string[] {
  return argv.map(shellQuote);
}

export function guestMountCommand(att: AttachmentDoc): string[] {
  return remoteCommand(["sudo", "-n", "sh", "-c", GUEST_MOUNT_SCRIPT, "aivm-mount", ...guestMountArgs(att)]);
}

export function guestUnmountCommand(att: AttachmentDoc): string[] {
  return remoteCommand(["sudo", "-n", "sh", "-c", GUEST_UNMOUNT_SCRIPT, "aivm-unmount", att.guest_dst, fstabKey(att)]);
}

export async function guestMount(runner: Runner, vm: Vm, ip: string, att: AttachmentDoc): Promise<void> {
  await runner.exec(sshArgv(vm, ip, { batch: true, connectTimeoutS: 10, command: guestMountCommand(att) }), { what: `share: mount ${att.guest_dst} in ${vm.name}`, timeoutMs: 60_000 });
}

export async function guestUnmount(runner: Runner, vm: Vm, ip: string, att: AttachmentDoc): Promise<void> {
  await runner.exec(sshArgv(vm, ip, { batch: true, connectTimeoutS: 10, command: guestUnmountCommand(att) }), { what: `share: unmount ${att.guest_dst} in ${vm.name}`, timeoutMs: 60_000 });
}

/**
 * One ssh round trip for `aivm ssh` / `aivm code`: the text the guest user's login shell runs (ssh hands the remote
 * command to it, as for a bare `ssh vm CMD`). It checks the mount with shell builtins only (/proc/self/mountinfo),
 * mounts with sudo only when the folder is not mounted, cds to cwd, then runs CMD as typed (or a login shell).
 * Every value in it is shell-quoted; CMD is the user's own command line, passed like ssh passes it.
 */
export function sessionCommand(att: AttachmentDoc, command: string[], cwd: string = att.guest_dst): string[] {
  const parts: string[] = [];
  if (att.mode !== "git") {
    const mount = remoteCommand(["sudo", "-n", "sh", "-c", GUEST_MOUNT_SCRIPT, "aivm-mount", ...guestMountArgs(att)]).join(" ");
    parts.push(
      `m=; while read -r _ _ _ _ p _; do [ "$p" = ${shellQuote(fstabEscape(att.guest_dst))} ] && m=1; done < /proc/self/mountinfo`,
      `[ -n "$m" ] || ${mount} || exit 1`,
    );
  }
  parts.push(`cd ${shellQuote(cwd)} || exit 1`);
  parts.push(command.length ? command.join(" ") : `exec "\${SHELL:-/bin/sh}" -l`);
  return [parts.join("; ")];
}

// ---------- git mode ----------

export function gitRemoteName(vm: Vm): string {
  return `aivm-${vm.name}`;
}

/** host git with the repo trusted even when another user owns it (we may run under sudo). */
export function gitArgv(repo: string, ...args: string[]): string[] {
  return ["git", "-c", `safe.directory=${repo}`, "-C", repo, ...args];
}

/** The work tree's top level, or a usage error (exit 2). */
export async function gitTopLevel(runner: Runner, dir: string): Promise<string> {
  const r = await runner.read(gitArgv(dir, "rev-parse", "--show-toplevel"), { nothrow: true });
  if (r.exitCode !== 0 || !r.stdout.trim()) throw new UsageError("share attach", `${dir} is not a git work tree (--mode git)`, "run `git init` there first, or use --mode shared-root");
  return realpathSync(r.stdout.trim());
}

/** Runs as the guest user: create the repo directory (sudo for the parents), init, accept pushes to the checked-out branch. $1 dst $2 branch */
export const GUEST_GIT_SCRIPT = `set -eu
dst=$1 branch=$2
if [ ! -d "$dst" ]; then sudo -n mkdir -p "$dst"; sudo -n chown "$(id -u):$(id -g)" "$dst"; fi
cd "$dst"
[ -e .git ] || git init -q -b "$branch"
git config receive.denyCurrentBranch updateInstead
`;

export async function currentBranch(runner: Runner, repo: string): Promise<string> {
  const r = await runner.read(gitArgv(repo, "symbolic-ref", "--short", "HEAD"), { nothrow: true });
  return r.exitCode === 0 && r.stdout.trim() ? r.stdout.trim() : "main";
}

export async function gitAttach(runner: Runner, vm: Vm, ip: string, att: AttachmentDoc): Promise<void> {
  const branch = await currentBranch(runner, att.host_path);
  await runner.exec(sshArgv(vm, ip, { batch: true, connectTimeoutS: 10, command: remoteCommand(["sh", "-c", GUEST_GIT_SCRIPT, "aivm-git", att.guest_dst, branch]) }), { what: `share: guest repo ${att.guest_dst}` });
  const name = gitRemoteName(vm);
  const url = `${vm.name}:${att.guest_dst}`;
  const cur = await runner.read(gitArgv(att.host_path, "remote", "get-url", name), { nothrow: true });
  if (cur.exitCode !== 0) await runner.exec(gitArgv(att.host_path, "remote", "add", name, url), { what: "share: git remote" });
  else if (cur.stdout.trim() !== url) await runner.exec(gitArgv(att.host_path, "remote", "set-url", name, url), { what: "share: git remote" });
}

export function gitSyncArgv(vm: Vm, att: AttachmentDoc, dir: "push" | "pull", branch: string): string[][] {
  const r = gitRemoteName(vm);
  if (dir === "push") return [gitArgv(att.host_path, "push", r, `HEAD:refs/heads/${branch}`)];
  return [gitArgv(att.host_path, "fetch", r), gitArgv(att.host_path, "merge", "--ff-only", `${r}/${branch}`)];
}

// ---------- uid/gid of the guest user ----------

/**
 * The ids the guest user gets so that its files are the host user's files: SUDO_UID/SUDO_GID when aivm runs under
 * sudo; else the process's own ids; as plain root (no host user to match), the owner of the first saved attachment
 * when it is not root; else none (the image's default).
 */
export function guestIds(vm: Vm, env: Record<string, string | undefined> = process.env): { uid?: number; gid?: number } {
  const n = (v: string | undefined) => (v && /^\d+$/.test(v) ? Number(v) : undefined);
  const su = n(env.SUDO_UID);
  if (su) return { uid: su, gid: n(env.SUDO_GID) ?? su };
  const uid = process.getuid?.() ?? 0;
  if (uid !== 0) return { uid, gid: process.getgid?.() ?? uid };
  for (const a of vm.attachments) {
    const st = safe(() => statSync(a.host_path));
    if (st && st.uid !== 0) return { uid: st.uid, gid: st.gid };
  }
  return {};
}

/** For messages: who the host user is. */
export function hostUserName(): string {
  return process.env.SUDO_USER || safe(() => userInfo().username) || "you";
}


// ---------- the domain's virtiofs devices (cold-plug only) ----------

/** The virtiofs tags in a domain XML. */
export function domainTags(xml: string): string[] {
  return [...xml.matchAll(/<filesystem\b[\s\S]*?<target\s+dir=(['"])(.*?)\1[\s\S]*?<\/filesystem>/g)].map((m) => m[2]!.replace(/&apos;/g, "'").replace(/&quot;/g, '"').replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&"));
}

/** The tags the VM's domain lacks (its persistent definition), or null when there is no domain. */
export async function missingTags(runner: Runner, vm: Vm): Promise<string[] | null> {
  const { virshRead } = await import("./virsh.ts");
  const r = await virshRead(runner, vm.paths.libvirtUri, ["dumpxml", "--inactive", vm.name]);
  if (r.exitCode !== 0) return null;
  const have = domainTags(r.stdout);
  return vmFilesystems(vm).map((f) => f.tag).filter((t) => !have.includes(t));
}

/** Tags the domain has that the VM no longer wants (a detached `shared` folder). */
export async function extraTags(runner: Runner, vm: Vm): Promise<string[]> {
  const { virshRead } = await import("./virsh.ts");
  const r = await virshRead(runner, vm.paths.libvirtUri, ["dumpxml", "--inactive", vm.name]);
  if (r.exitCode !== 0) return [];
  const want = vmFilesystems(vm).map((f) => f.tag);
  return domainTags(r.stdout).filter((t) => !want.includes(t));
}

/** Redefine the (shut off) domain with the VM's current virtiofs devices, keeping its UUID and domain type. */
export async function redefineFilesystems(runner: Runner, vm: Vm): Promise<void> {
  const { virshRead, virshArgv } = await import("./virsh.ts");
  const { domainUuid, planDomain, realHost } = await import("./vm.ts");
  const { renderDomainXml } = await import("./domain.ts");
  const { cachedImage } = await import("./image.ts");
  const uri = vm.paths.libvirtUri;
  const cur = await virshRead(runner, uri, ["dumpxml", "--inactive", vm.name]);
  const type = /<domain\b[^>]*type=['"]kvm['"]/.test(cur.stdout) ? "kvm" : "qemu";
  const uuid = (await domainUuid(runner, uri, vm.name)) ?? undefined;
  const xml = renderDomainXml(planDomain(vm, { type, image: cachedImage(vm.paths, vm.image.sha256), uuid, exists: realHost.exists }));
  await runner.step({
    title: `Redefine VM ${vm.name} with its virtiofs devices`,
    why: `virtiofs devices are cold-plugged: ${vmFilesystems(vm).map((f) => f.tag).join(", ")}`,
    consent: true,
    actions: [{ kind: "run", argv: virshArgv(uri, "define", "/dev/stdin"), input: xml }],
  });
}

/** Start errors that mean the machine ran out of PCI slots for per-folder devices. */
export function pciExhausted(message: string): boolean {
  return /no more available PCI slots|no free PCI|PCI slot/i.test(message);
}

// ---------- attach / detach ----------

export interface ShareState { state: string; ip: string | null }

async function vmState(runner: Runner, vm: Vm): Promise<string> {
  const { domainState } = await import("./vm.ts");
  return domainState(runner, vm.paths.libvirtUri, vm.name);
}

const RUNNING = new Set(["running", "idle", "blocked", "no state"]);

async function runningIp(runner: Runner, vm: Vm): Promise<string> {
  const { waitVm } = await import("./vm.ts");
  return (await waitVm(runner, vm, { until: "ssh", timeoutS: 120 })).ip;
}

/** Restart a running VM so cold-plugged devices take effect: ACPI shutdown, redefine, start (binds restored), wait for SSH. */
export async function restartWithDevices(runner: Runner, vm: Vm): Promise<string> {
  const { stopVm, startVm, waitVm } = await import("./vm.ts");
  await stopVm(runner, vm);
  await redefineFilesystems(runner, vm);
  try {
    await startVm(runner, vm);
  } catch (e) {
    if (pciExhausted((e as Error).message)) throw new AivmError(`vm up ${vm.name}`, "no PCI slot left for another virtiofs device", EXIT.FAILED, "attach folders with --mode shared-root: they all share one device");
    throw e;
  }
  return (await waitVm(runner, vm, { until: "ssh" })).ip;
}

export interface AttachOutcome { att: AttachmentDoc; state: string; mounted: boolean; note?: string }

/**
 * Attach a folder to a VM (att from planAttachment, preflight already approved). Records the attachment, then makes
 * it real as far as the VM's state allows: host bind (shared-root), device (shared, cold-plug: a running VM is
 * restarted after consent), guest mount and fstab line (running VM), guest clone and host remote (git).
 */
export async function attachFolder(runner: Runner, configPath: string, vm: Vm, att: AttachmentDoc): Promise<AttachOutcome> {
  const { updateStore, recordVm } = await import("./config.ts");
  const { upsertSshConfig } = await import("./ssh-config.ts");
  const state = await vmState(runner, vm);
  const running = RUNNING.has(state);
  const next: Vm = { ...vm, attachments: [...vm.attachments.filter((a) => a.host_path !== att.host_path), att] };
  if (att.mode === "git" && !running) {
    throw new AivmError("share attach", `--mode git needs ${vm.name} running (the guest clone is made over SSH)`, EXIT.FAILED, "start it with `aivm vm up`");
  }
  // cold-plug: a device the domain lacks needs a shut-off domain
  let restart = false;
  let missing: string[] = [];
  if (att.mode !== "git" && state !== "absent") {
    missing = (await missingTags(runner, next)) ?? [];
    if (missing.length && running) {
      if (runner.dryRun) log.info(`dry run: ${vm.name} would need a restart to add virtiofs device(s) ${missing.join(", ")}`);
      else restart = await runner.confirm("share attach", `${vm.name} needs a restart to add the virtiofs device(s) ${missing.join(", ")} (live attach is unsafe with libvirt 9). Restart it now?`);
    }
  }
  updateStore(configPath, (d) => withAttachment(recordVm(d, vm), vm.name, att), { dryRun: runner.dryRun });
  if (att.mode === "git") {
    const ip = await runningIp(runner, next);
    await upsertSshConfig(runner, next, ip);
    await gitAttach(runner, next, ip, att);
    return { att, state, mounted: true };
  }
  if (att.mode === "shared-root") {
    await ensureExportMount(runner, next);
    await ensureHostBind(runner, next, att);
  }
  if (missing.length && !running) await redefineFilesystems(runner, next);
  if (state === "absent") return { att, state, mounted: false, note: `saved; ${vm.name} does not exist yet: the folder is mounted once it is created and started (aivm up)` };
  if (!running) return { att, state, mounted: false, note: `saved; mounted at ${att.guest_dst} when ${vm.name} starts` };
  let ip: string;
  if (missing.length) {
    if (!restart) return { att, state, mounted: false, note: `saved; ${vm.name} must restart to get the device: aivm vm restart --vm ${vm.name}` };
    ip = await restartWithDevices(runner, next);
  } else {
    ip = await runningIp(runner, next);
  }
  if (att.mode === "shared-root" && !runner.dryRun && virtiofsdSees(next, att) === false) {
    throw new AivmError("share attach", `${vm.name}'s virtiofsd does not see the new bind of ${att.host_path} (its mount namespace receives no host mounts: the export root was not a shared mount when the VM started)`, EXIT.FAILED, `restart the VM once (aivm vm restart --vm ${vm.name}); the attachment is saved and mounts then`);
  }
  await guestMount(runner, next, ip, att);
  return { att, state, mounted: true };
}

export interface DetachOutcome { removed: boolean; problems: string[] }

/**
 * Detach: guest unmount and fstab line (when running), host bind (shared-root), device (shared: redefined when shut
 * off, else at the next restart), then the record. When a step fails the record stays and the problems are returned.
 */
export async function detachFolder(runner: Runner, configPath: string, vm: Vm, att: AttachmentDoc): Promise<DetachOutcome> {
  const { updateStore } = await import("./config.ts");
  const problems: string[] = [];
  const state = await vmState(runner, vm);
  const running = RUNNING.has(state);
  const next: Vm = { ...vm, attachments: vm.attachments.filter((a) => a.host_path !== att.host_path) };
  if (att.mode !== "git" && running) {
    try {
      const ip = await runningIp(runner, vm);
      await guestUnmount(runner, vm, ip, att);
    } catch (e) {
      problems.push(`guest unmount of ${att.guest_dst}: ${(e as Error).message}`);
    }
  } else if (att.mode !== "git" && state !== "absent") {
    log.info(`${vm.name} is ${state}: its fstab keeps a nofail line for ${att.guest_dst} that finds nothing to mount`);
  }
  if (att.mode === "shared-root" && problems.length === 0) {
    // virtiofsd may still hold files in it for a moment after the guest let go (busy): retry for a few seconds
    for (let i = 0; ; i++) {
      try {
        await runActions(runner, hostUnbindPlan(vm, att, readMounts()), `share: unbind ${att.host_path}`);
        break;
      } catch (e) {
        if (i < 10 && /busy/i.test((e as Error).message)) {
          await Bun.sleep(1000);
          continue;
        }
        problems.push(`host unbind: ${(e as Error).message}`);
        break;
      }
    }
  }
  if (att.mode === "shared" && problems.length === 0 && state !== "absent") {
    if (running) log.info(`the virtiofs device for ${att.host_path} goes away at ${vm.name}'s next restart`);
    else if ((await extraTags(runner, next)).length) await redefineFilesystems(runner, next);
  }
  if (att.mode === "git") log.info(`the guest clone ${att.guest_dst} and the host remote ${gitRemoteName(vm)} stay; remove them by hand if you want`);
  if (problems.length) return { removed: false, problems };
  updateStore(configPath, (d) => withoutAttachment(d, vm.name, att.host_path), { dryRun: runner.dryRun });
  return { removed: true, problems };
}
