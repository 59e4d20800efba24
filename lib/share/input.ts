// Planning an attachment from user input: modes, access, guest paths, the saved record, overlaps.
import { realpathSync, statSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import type { Access, AttachmentDoc, Mode, StoreDoc, Vm } from "../config/model.ts";
import { AivmError, UsageError } from "../errors.ts";
import { GUEST_ROOT, within } from "./names.ts";
import { shellQuote } from "../shell.ts";
import { guestPathProblem } from "../validate.ts";

export const MODES: Mode[] = ["shared-root", "shared", "git"];

export const ACCESS: Access[] = ["rw", "ro"];

// eslint-disable-next-line no-control-regex
export const CONTROL = /[\x00-\x1f\x7f]/;

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
  const guestDst = o.guestDst !== undefined ? o.guestDst.replace(/(.)\/+$/, "$1") : undefined;
  if (guestDst !== undefined) {
    const p = guestPathProblem(guestDst);
    if (p) throw new UsageError("--guest-dst", p);
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
  const p = guestPathProblem(dst);
  if (p) throw new UsageError("share attach", `guest path ${p}`, "pass --guest-dst PATH");
  const clash = vm.attachments.find((a) => a.guest_dst === dst);
  if (clash) throw new UsageError("share attach", `guest path ${dst} is already used by ${clash.host_path}`, "pass --guest-dst PATH");
  return { att: { host_path: hostPath, mode, access, guest_dst: dst }, saved: false };
}

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

/** Saved attachments that are a parent or a child of hostPath (same folder excluded). */
export function overlapping(vm: Vm, hostPath: string): AttachmentDoc[] {
  return vm.attachments.filter((a) => a.host_path !== hostPath && (within(a.host_path, hostPath) || within(hostPath, a.host_path)));
}
