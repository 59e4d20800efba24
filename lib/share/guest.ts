// Guest-side mounts: fstab lines, the mount/unmount scripts run as root in the guest, the session command,
// and the guest user's ids.
import { GUEST_ROOT, ROOT_TAG, sharedTag, shareToken } from "./names.ts";
import type { AttachmentDoc, Vm } from "../config/model.ts";
import type { Host } from "../host.ts";
import { type Runner } from "../run.ts";
import { sshArgv } from "../ssh-config.ts";
import { shellQuote } from "../shell.ts";

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
 * What a user asked to run in the guest: an argument vector (`-- CMD ARG...`: each argument arrives as the same single
 * argument, quoted for the guest's shell), or one shell command line on purpose (`--shell 'CMD'`: the guest's shell
 * splits and expands it). Neither: a login shell.
 */
export interface UserCommand { argv?: string[]; shell?: string }

/** The remote command text for a user's command (ssh joins its words with spaces; the guest's shell splits them). */
export function userCommandText(c: UserCommand): string | null {
  if (c.shell !== undefined) return c.shell;
  return c.argv?.length ? remoteCommand(c.argv).join(" ") : null;
}

/**
 * One ssh round trip for `aivm ssh` / `aivm code`: the text the guest user's login shell runs (ssh hands the remote
 * command to it, as for a bare `ssh vm CMD`). It checks the mount with shell builtins only (/proc/self/mountinfo),
 * mounts with sudo only when the folder is not mounted, cds to cwd, then runs the user's command (userCommandText:
 * every argument quoted, or the one shell line given with --shell), or a login shell.
 */
export function sessionCommand(att: AttachmentDoc, command: UserCommand, cwd: string = att.guest_dst): string[] {
  const parts: string[] = [];
  if (att.mode !== "git") {
    const mount = remoteCommand(["sudo", "-n", "sh", "-c", GUEST_MOUNT_SCRIPT, "aivm-mount", ...guestMountArgs(att)]).join(" ");
    parts.push(
      `m=; while read -r _ _ _ _ p _; do [ "$p" = ${shellQuote(fstabEscape(att.guest_dst))} ] && m=1; done < /proc/self/mountinfo`,
      `[ -n "$m" ] || ${mount} || exit 1`,
    );
  }
  parts.push(`cd ${shellQuote(cwd)} || exit 1`);
  parts.push(userCommandText(command) ?? `exec "\${SHELL:-/bin/sh}" -l`);
  return [parts.join("; ")];
}

/**
 * The ids the guest user gets so that its files are the host user's files: SUDO_UID/SUDO_GID when aivm runs under
 * sudo; else the process's own ids; as plain root (no host user to match), the owner of the first saved attachment
 * when it is not root; else none (the image's default).
 */
export function guestIds(vm: Vm, host: Host): { uid?: number; gid?: number } {
  const n = (v: string | undefined) => (v && /^\d+$/.test(v) ? Number(v) : undefined);
  const su = n(host.env.SUDO_UID);
  if (su) return { uid: su, gid: n(host.env.SUDO_GID) ?? su };
  if (host.uid !== 0) return { uid: host.uid, gid: host.gid };
  for (const a of vm.attachments) {
    const st = host.stat(a.host_path);
    if (st && st.uid !== 0) return { uid: st.uid, gid: st.gid };
  }
  return {};
}
