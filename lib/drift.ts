// Pure drift comparisons: the config against what libvirt reports (domain, network).
import type { Network, Vm } from "./config/model.ts";
import { GIB, LiveDomain, type LiveNetConfig } from "./libvirt/parse.ts";
import type { FwStatus } from "./fw.ts";
import { vmFilesystems } from "./share/names.ts";

export interface DriftItem {
  what: "cpus" | "memory" | "disk" | "virtiofs" | "firewall";
  text: string;
  /** only in the persistent config: takes effect at the next restart */
  pending?: boolean;
}

/**
 * Pure: what differs between the config and the domain. `live` is the running definition (null when shut off),
 * `persistent` the inactive one (what the next boot uses).
 */
export function domainDrift(vm: Vm, o: { persistent: LiveDomain; live: LiveDomain | null; diskBytes: number | null; fw: FwStatus | null }): DriftItem[] {
  const items: DriftItem[] = [];
  const p = o.persistent;
  const l = o.live ?? p;
  const wantKib = vm.memoryMib * 1024;
  if (p.vcpus !== null && p.vcpus !== vm.cpus) items.push({ what: "cpus", text: `vCPUs are ${p.vcpus}, config says ${vm.cpus}` });
  else if (l.vcpus !== null && l.vcpus !== vm.cpus) items.push({ what: "cpus", text: `vCPUs ${l.vcpus} -> ${vm.cpus} take effect at the next restart`, pending: true });
  if (p.memoryKib !== null && p.memoryKib !== wantKib) items.push({ what: "memory", text: `memory is ${mib(p.memoryKib)} MiB, config says ${vm.memoryMib} MiB` });
  else if (l.memoryKib !== null && l.memoryKib !== wantKib) items.push({ what: "memory", text: `memory ${mib(l.memoryKib)} -> ${vm.memoryMib} MiB takes effect at the next restart`, pending: true });
  if (o.diskBytes !== null && o.diskBytes !== vm.diskGib * GIB) {
    items.push({ what: "disk", text: `disk is ${gib(o.diskBytes)} GiB, config says ${vm.diskGib} GiB${o.diskBytes > vm.diskGib * GIB ? " (aivm never shrinks a disk)" : ""}` });
  }
  for (const t of virtiofsDrift(vm, p)) items.push({ what: "virtiofs", text: t });
  if (o.fw && o.fw.enabled && o.fw.present) {
    const ports = o.fw.drift.filter((d) => /\bdport\b/.test(d));
    if (ports.length) items.push({ what: "firewall", text: `firewall ports differ from allow_tcp_ports/allow_udp_ports (${ports.join("; ")})` });
  }
  return items;
}

export const mib = (kib: number) => Math.round(kib / 1024);

export const gib = (b: number) => (Number.isInteger(b / GIB) ? String(b / GIB) : (b / GIB).toFixed(2));

/** Virtiofs devices against the ones the VM should carry (share.ts: the export root, plus one per `shared` attachment). */
export function virtiofsDrift(vm: Vm, d: LiveDomain): string[] {
  if (vm.imported) return []; // aivm did not lay out an imported domain's devices
  const want = vmFilesystems(vm);
  const have = d.filesystems.filter((f) => f.driver === "virtiofs");
  const out: string[] = [];
  for (const w of want) {
    if (!have.some((h) => h.source === w.source && h.target === w.tag)) out.push(`no virtiofs device ${w.tag} for ${w.source}${w.tag === want[0]!.tag ? "" : " (shared folders need a restart after share attach)"}`);
  }
  for (const h of have) {
    if (!want.some((w) => h.source === w.source && h.target === w.tag)) out.push(`virtiofs device ${h.target ?? "?"} (${h.source ?? "?"}) matches no attachment`);
  }
  return out;
}

/** Differences between a defined network and the config, one phrase each ([] when they agree). */
export function networkDrift(net: Network, live: LiveNetConfig): string[] {
  const d: string[] = [];
  if (live.bridge !== undefined && live.bridge !== net.bridge) d.push(`bridge is ${live.bridge}, config says ${net.bridge}`);
  if (live.subnet !== undefined && live.subnet !== net.subnet) d.push(`subnet is ${live.subnet}, config says ${net.subnet}`);
  if (live.gateway !== undefined && live.gateway !== net.gateway) d.push(`gateway is ${live.gateway}, config says ${net.gateway}`);
  return d;
}
