// From the store document to what planners consume: a VM, its network and paths, with the defaults applied.
import { join } from "node:path";
import { type AttachmentDoc, type AttachmentRecord, BUILTIN, builtinPaths, defaultBridge, defaultVmName, type ImageDoc, Network, type NetworkDoc, type Paths, type StoreDoc, type Vm, type VmDoc } from "./model.ts";
import { UsageError } from "../errors.ts";
import { intToIpv4, parseCidr } from "../validate.ts";
import { networkFacts } from "./validate.ts";
import { expandHome } from "../fsutil.ts";

/**
 * A network: its record, or [defaults.network]. Every check on it lives in validateDoc (run on every load), so this
 * only fails for a name given on the command line that is not in the store (exit 2).
 */
export function resolveNetwork(doc: StoreDoc, name?: string): Network {
  const defs = doc.defaults?.network ?? {};
  const wanted = name ?? defs.name ?? BUILTIN.network.name;
  const rec = (doc.networks ?? []).find((n) => n.name === wanted);
  if (!rec && name && name !== (defs.name ?? BUILTIN.network.name)) {
    throw new UsageError("unknown network", `${name} is not in the config store`, "see `aivm net list`");
  }
  const n: NetworkDoc = { ...(rec ? {} : defs), ...(rec ?? {}), name: wanted };
  const fw = { ...BUILTIN.firewall, ...(doc.defaults?.firewall ?? {}), ...(rec?.firewall ?? {}) };
  const f = networkFacts(doc, wanted);
  const c = f.cidr ?? parseCidr(BUILTIN.network.subnet)!;
  const { subnet, gateway, dhcpStart, dhcpEnd } = f;
  const mask = (0xffffffff << (32 - c.prefix)) >>> 0;
  return {
    name: wanted,
    bridge: n.bridge ?? defaultBridge(wanted),
    subnet,
    prefix: c.prefix,
    netmask: intToIpv4(mask),
    gateway,
    dhcpStart,
    dhcpEnd,
    firewall: {
      enabled: fw.enabled,
      allowTcp: [...new Set(fw.allow_tcp_ports)].sort((a, b) => a - b),
      allowUdp: [...new Set(fw.allow_udp_ports)].sort((a, b) => a - b),
      blockCidrs: [...new Set([...fw.block_cidrs, ...fw.extra_block_cidrs])],
    },
  };
}

export function resolvePaths(doc: StoreDoc): Paths {
  const p = { ...builtinPaths(), ...(doc.defaults?.paths ?? {}) };
  const identity = expandHome(p.ssh_identity);
  return {
    vmRoot: expandHome(p.vm_root),
    imageCache: expandHome(p.image_cache),
    sshIdentity: identity,
    sshPubkey: identity + ".pub",
    libvirtUri: p.libvirt_uri,
  };
}

/** The names of the VMs: recorded ones, or the one [defaults] would create. */
export function vmNames(doc: StoreDoc): string[] {
  const rec = (doc.vms ?? []).map((v) => v.name);
  return rec.length ? rec : [doc.defaults?.vm?.name ?? defaultVmName()];
}

/**
 * Resolve one VM: --vm NAME, else the only recorded VM, else the VM [defaults] would create.
 * A name that is neither recorded nor the defaults' name is an error (exit 2).
 */
export function resolveVm(doc: StoreDoc, name?: string): Vm {
  const vms = doc.vms ?? [];
  let rec = name ? vms.find((v) => v.name === name) : vms.length === 1 ? vms[0] : undefined;
  const defName = doc.defaults?.vm?.name ?? defaultVmName();
  if (!rec && !name && vms.length > 1) {
    throw new UsageError("which VM?", `the config store has ${vms.length} VMs (${vms.map((v) => v.name).join(", ")})`, "pass --vm NAME");
  }
  if (!rec && name && name !== defName && vms.length > 0) {
    throw new UsageError("unknown VM", `${name} is not in the config store`, "see `aivm list`");
  }
  if (!rec && name && name !== defName) {
    // no VMs recorded: any valid name creates a VM from [defaults]
  }
  const d = { ...BUILTIN.vm, ...(doc.defaults?.vm ?? {}) };
  const r: Partial<VmDoc & { network: string; image: ImageDoc; attachments: AttachmentRecord[] }> = rec ?? {};
  const vmName = rec?.name ?? name ?? defName;
  const paths = resolvePaths(doc);
  const image = { ...BUILTIN.image, ...(doc.defaults?.image ?? {}), ...(r.image ?? {}) };
  return {
    name: vmName,
    user: r.user ?? d.user,
    cpus: r.cpus ?? d.cpus,
    memoryMib: r.memory_mib ?? d.memory_mib,
    diskGib: r.disk_gib ?? d.disk_gib,
    accel: r.accel ?? d.accel,
    shutdownTimeoutS: r.shutdown_timeout_s ?? d.shutdown_timeout_s,
    waitTimeoutS: r.wait_timeout_s ?? d.wait_timeout_s,
    image,
    network: resolveNetwork(doc, r.network ?? doc.defaults?.network?.name),
    paths,
    attachments: (r.attachments ?? []).map(attachmentDefaults),
    dir: join(paths.vmRoot, vmName),
    recorded: !!rec,
    ...(rec?.imported ? { imported: true } : {}),
  };
}

/** The README's defaults for an attachment written with only some keys: shared-root, rw, the same path in the guest. */
export function attachmentDefaults(a: AttachmentRecord): AttachmentDoc {
  return { ...a, host_path: a.host_path, mode: a.mode ?? "shared-root", access: a.access ?? "rw", guest_dst: a.guest_dst ?? a.host_path };
}

/** Record a VM (and its network) in the store document if it is not there yet. Returns the new doc. */
export function recordVm(doc: StoreDoc, vm: Vm): StoreDoc {
  const next = structuredClone(doc);
  next.networks ??= [];
  if (!next.networks.some((n) => n.name === vm.network.name)) {
    const defs = doc.defaults?.network ?? {};
    next.networks.push({ ...defs, name: vm.network.name, bridge: vm.network.bridge, subnet: vm.network.subnet });
  }
  next.vms ??= [];
  if (!next.vms.some((v) => v.name === vm.name)) next.vms.push({ name: vm.name, network: vm.network.name });
  return next;
}

export function networkNames(doc: StoreDoc): string[] {
  const rec = (doc.networks ?? []).map((n) => n.name);
  return rec.length ? rec : [doc.defaults?.network?.name ?? BUILTIN.network.name];
}

/** Which rule chose the VM a command works on (lib/flows/target.ts asks when no rule decides). */
export type VmRule = "--vm" | "folder" | "only" | "defaults" | "picked";

export interface VmChoice { name: string; rule: VmRule; why: string }

const inside = (child: string, parent: string) => child === parent || child.startsWith(parent.endsWith("/") ? parent : parent + "/");

/**
 * The one VM-resolution rule, pure: --vm NAME; else the VM the folder (or its nearest attached parent) is attached to;
 * else the only VM in the store; else, with no VM recorded, the one [defaults] describes. When none of these decides,
 * the candidates to pick from (several VMs, or the nearest attached folder attached to several).
 * `folder` is the resolved (realpath) folder the command is about: its DIR, or the current directory.
 */
export function chooseVm(doc: StoreDoc, o: { name?: string; folder?: string | null }): VmChoice | { candidates: string[]; why: string } {
  if (o.name !== undefined) return { name: o.name, rule: "--vm", why: "given with --vm" };
  const vms = doc.vms ?? [];
  if (o.folder) {
    let best = -1;
    let hits: { vm: string; path: string }[] = [];
    for (const v of vms) {
      for (const a of v.attachments ?? []) {
        if (!a.host_path || !inside(o.folder, a.host_path)) continue;
        if (a.host_path.length > best) { best = a.host_path.length; hits = []; }
        if (a.host_path.length === best && !hits.some((h) => h.vm === v.name)) hits.push({ vm: v.name, path: a.host_path });
      }
    }
    if (hits.length === 1) {
      const h = hits[0]!;
      return { name: h.vm, rule: "folder", why: h.path === o.folder ? `${h.path} is attached to it` : `${o.folder} is inside ${h.path}, which is attached to it` };
    }
    if (hits.length > 1) return { candidates: hits.map((h) => h.vm), why: `${hits[0]!.path} is attached to ${hits.length} VMs` };
  }
  if (vms.length === 1) return { name: vms[0]!.name, rule: "only", why: "the only VM in the config store" };
  if (vms.length === 0) return { name: doc.defaults?.vm?.name ?? defaultVmName(), rule: "defaults", why: "no VM recorded yet: the one [defaults] describes" };
  return { candidates: vms.map((v) => v.name), why: `the config store has ${vms.length} VMs and ${o.folder ? `${o.folder} is attached to none of them` : "no folder decides"}` };
}
