// Shared fixtures: the URI and argv prefix every fake libvirt reply is keyed on, a test store built on a
// temporary root, and an attachment record.
import { join } from "node:path";
import type { AttachmentDoc } from "../../lib/config/model.ts";

export const URI = "qemu:///system";
/** The argv prefix of every virsh call aivm makes. */
export const V = ["virsh", "-q", "-c", URI];
/** A pinned image sha256 the fixtures' caches use. */
export const SHA = "b".repeat(64);
export const NO_DOMAIN = { exitCode: 1, stderr: "error: failed to get domain 'box'\nerror: Domain not found: no domain with matching name 'box'\n" };

/** A store whose [defaults] describe VM "box" (TCG, short waits) with every path under `root`; `extra` is appended. */
export function storeToml(root: string, extra = ""): string {
  return [
    `[defaults.vm]`, `name = "box"`, `accel = "tcg"`, `wait_timeout_s = 10`, ``,
    `[defaults.image]`, `url = "file:///base.qcow2"`, `sha256 = "${SHA}"`, ``,
    `[defaults.paths]`, `vm_root = "${join(root, "vms")}"`, `image_cache = "${join(root, "images")}"`, `ssh_identity = "${join(root, "id")}"`, `libvirt_uri = "${URI}"`, ``,
    extra,
  ].join("\n");
}

/** The [[networks]] and [[vms]] records of "box" on "aivm-net", with these attachments. */
export function recordedToml(atts: AttachmentDoc[] = []): string {
  return `[[networks]]\nname = "aivm-net"\nsubnet = "10.77.0.0/24"\n\n[[vms]]\nname = "box"\nnetwork = "aivm-net"\n` +
    atts.map((a) => `\n[[vms.attachments]]\nhost_path = ${JSON.stringify(a.host_path)}\nmode = "${a.mode}"\naccess = "${a.access}"\nguest_dst = ${JSON.stringify(a.guest_dst)}\n`).join("");
}

/** An attachment record (shared-root, rw, same path in the guest unless overridden). */
export function attachment(path: string, o: Partial<AttachmentDoc> = {}): AttachmentDoc {
  return { host_path: path, mode: "shared-root", access: "rw", guest_dst: path, ...o };
}
