// Names and places of shared folders: the export root, per-folder tokens and virtiofs tags, path helpers.
import { basename, isAbsolute, join, relative } from "node:path";
import type { Vm } from "../config/model.ts";
import type { DomainSpec } from "../domain.ts";
import { sha256hex } from "../digest.ts";

/** The one virtiofs tag every VM has: its export root. */
export const ROOT_TAG = "aivm-root";

/** Where the guest mounts the root tag. */
export { GUEST_ROOT } from "../validate.ts";

/** The VM's export root: the source of the aivm-root device; attached folders are bind-mounted under it. */
export function exportRoot(vm: Vm): string {
  return join(vm.dir, "export");
}

/**
 * Where aivm makes the export root's mount points: a directory no guest can reach, bound read-only onto the export
 * root, so the guest (root in the guest, writing through virtiofs) can create nothing in the export root itself.
 */
export function shareRoot(vm: Vm): string {
  return join(vm.dir, "share");
}

/** Where every folder is bound and checked first, before it is bound into the export (see host-mounts.ts). */
export function stageRoot(vm: Vm): string {
  return join(vm.dir, "stage");
}

/** A stable, filesystem-safe name for a host folder: sanitized basename + 10 hex of sha256(resolved path). */
export function shareToken(hostPath: string): string {
  const base = basename(hostPath).normalize("NFKD").replace(/[^A-Za-z0-9_.-]+/g, "_").replace(/^[._-]+|_+$/g, "").slice(0, 24);
  const hash = sha256hex(hostPath).slice(0, 10);
  return `${base || "root"}-${hash}`;
}

/** The virtiofs tag of a `shared` (per-folder) device: at most 36 characters. */
export function sharedTag(hostPath: string): string {
  const hash = sha256hex(hostPath).slice(0, 10);
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

export const within = (child: string, parent: string) => {
  const r = relative(parent, child);
  return r === "" || (!r.startsWith("..") && !isAbsolute(r));
};
