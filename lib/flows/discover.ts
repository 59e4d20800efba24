// `aivm config discover`: libvirt domains aivm does not manage, summarized, and imported as [[vms]] records on request.
// An imported record is marked `imported = true`: aivm did not create its disk, seed or host key, so it has no pinned
// host key (status reports SSH as unknown) and aivm removes nothing of it outside vm.dir. Its libvirt network, when not
// in the store yet, is recorded with the firewall off: aivm's isolation table is not imposed on a network it did not make.

import type { NetworkDoc, StoreDoc, VmDoc } from "../config/model.ts";
import { resolveVm } from "../config/resolve.ts";
import { validateDoc } from "../config/validate.ts";
import { lastLine } from "../errors.ts";
import { parseKeyValues, GIB, LiveDisk, mainDisk, parseBlkCapacity, parseDhcpRange, parseDomainXml, parseNetworkXml } from "../libvirt/parse.ts";
import { virshRead } from "../libvirt/virsh.ts";
import type { Runner } from "../run.ts";
import { nameProblem } from "../validate.ts";


export interface DomainSummary {
  name: string;
  state: string;
  autostart: boolean | null;
  vcpus: number | null;
  memoryMib: number | null;
  /** libvirt networks of its interfaces (type network), in order */
  networks: string[];
  /** interfaces that are not on a libvirt network (bridge, direct, user) */
  otherInterfaces: string[];
  disks: LiveDisk[];
  /** the main disk's capacity */
  diskBytes: number | null;
  filesystems: number;
}

export interface LiveNetwork {
  name: string;
  bridge?: string;
  subnet?: string;
  gateway?: string;
  dhcpStart?: string;
  dhcpEnd?: string;
}

type VmRecord = VmDoc & { name: string; network: string };

type NetRecord = NetworkDoc & { name: string; firewall?: { enabled: boolean } };

export interface ImportPlan {
  name: string;
  vm?: VmRecord;
  /** a [[networks]] record to add with it */
  network?: NetRecord;
  /** why it cannot be imported */
  skip?: string;
}

/** Domains libvirt knows that the store does not record, with their summaries. */
export async function listUnmanaged(runner: Runner, uri: string, doc: StoreDoc): Promise<DomainSummary[]> {
  const r = await virshRead(runner, uri, ["list", "--all", "--name"]);
  if (r.exitCode !== 0) throw new Error(`virsh list: ${lastLine(r.stderr) || `exit ${r.exitCode}`}`);
  const managed = new Set((doc.vms ?? []).map((v) => v.name));
  const names = r.stdout.split("\n").map((l) => l.trim()).filter((n) => n && !managed.has(n));
  const out: DomainSummary[] = [];
  for (const name of names) out.push(await summarize(runner, uri, name));
  return out;
}

export async function summarize(runner: Runner, uri: string, name: string): Promise<DomainSummary> {
  const info = await virshRead(runner, uri, ["dominfo", name]);
  const kv = info.exitCode === 0 ? parseKeyValues(info.stdout) : {};
  const x = await virshRead(runner, uri, ["dumpxml", "--inactive", name]);
  const d = x.exitCode === 0 ? parseDomainXml(x.stdout) : null;
  const maxMem = /^(\d+)\s*KiB$/i.exec(kv["max memory"] ?? "")?.[1];
  const disk = d ? mainDisk(d) : undefined;
  let diskBytes: number | null = null;
  if (disk?.target) {
    const b = await virshRead(runner, uri, ["domblkinfo", name, disk.target]);
    if (b.exitCode === 0) diskBytes = parseBlkCapacity(b.stdout);
  }
  return {
    name,
    state: kv.state ?? "unknown",
    autostart: kv.autostart ? kv.autostart === "enable" : null,
    vcpus: d?.vcpus ?? (kv["cpu(s)"] ? Number(kv["cpu(s)"]) : null),
    memoryMib: d?.memoryKib ? Math.round(d.memoryKib / 1024) : maxMem ? Math.round(Number(maxMem) / 1024) : null,
    networks: d?.interfaces.filter((i) => i.type === "network" && i.network).map((i) => i.network!) ?? [],
    otherInterfaces: d?.interfaces.filter((i) => i.type !== "network").map((i) => `${i.type}${i.bridge ? ` ${i.bridge}` : ""}`) ?? [],
    disks: d?.disks ?? [],
    diskBytes,
    filesystems: d?.filesystems.length ?? 0,
  };
}

export async function liveNetwork(runner: Runner, uri: string, name: string): Promise<LiveNetwork | null> {
  const r = await virshRead(runner, uri, ["net-dumpxml", name]);
  if (r.exitCode !== 0) return null;
  const n = parseNetworkXml(r.stdout);
  const range = parseDhcpRange(r.stdout);
  return { name, bridge: n.bridge, subnet: n.subnet, gateway: n.gateway, dhcpStart: range.start, dhcpEnd: range.end };
}

export function formatSummary(s: DomainSummary): string {
  const disks = s.disks.filter((d) => d.device === "disk").map((d) => `${d.target ?? "?"}=${d.file ?? "?"}`);
  return [
    `${s.name}: ${s.state}${s.autostart ? ", autostart" : ""}`,
    `  ${s.vcpus ?? "?"} vCPUs, ${s.memoryMib ?? "?"} MiB, disk ${s.diskBytes === null ? "?" : `${(s.diskBytes / GIB).toFixed(1)} GiB`}`,
    `  network: ${[...s.networks, ...s.otherInterfaces].join(", ") || "none"}`,
    `  disks: ${disks.join(", ") || "none"}${s.filesystems ? `; ${s.filesystems} shared filesystem(s)` : ""}`,
  ].join("\n");
}

/** Pure: the records an import adds, or why it cannot be imported. `nets`: live networks by name (null: unreadable). */
export function planImport(doc: StoreDoc, s: DomainSummary, nets: Map<string, LiveNetwork | null>): ImportPlan {
  const skip = (why: string): ImportPlan => ({ name: s.name, skip: why });
  const bad = nameProblem(s.name);
  if (bad) return skip(`its name is not a valid aivm VM name (${bad})`);
  const netName = s.networks[0];
  if (!netName) return skip(`it is not on a libvirt network (${s.otherInterfaces.join(", ") || "no interface"}); an aivm VM record needs one`);
  if (s.vcpus === null || s.memoryMib === null) return skip("its vCPUs or memory could not be read");
  const vm: VmRecord = {
    name: s.name,
    network: netName,
    cpus: s.vcpus,
    memory_mib: s.memoryMib,
    ...(s.diskBytes !== null ? { disk_gib: Math.max(1, Math.ceil(s.diskBytes / GIB)) } : {}),
    imported: true,
  };
  let network: NetRecord | undefined;
  if (!(doc.networks ?? []).some((n) => n.name === netName)) {
    const live = nets.get(netName);
    if (!live) return skip(`its network ${netName} could not be read (virsh net-dumpxml)`);
    if (!live.subnet || !live.gateway) return skip(`its network ${netName} has no IPv4 subnet aivm can record`);
    network = {
      name: netName,
      ...(live.bridge ? { bridge: live.bridge } : {}),
      subnet: live.subnet,
      gateway: live.gateway,
      ...(live.dhcpStart && live.dhcpEnd ? { dhcp_start: live.dhcpStart, dhcp_end: live.dhcpEnd } : {}),
      firewall: { enabled: false },
    };
  }
  // the records must make a valid store that resolves
  const next = withImports(doc, [{ name: s.name, vm, network }]);
  const problems = validateDoc(next as Record<string, unknown>);
  if (problems.length) return skip(`its record would be invalid: ${problems[0]!.message}`);
  try {
    resolveVm(next, s.name);
  } catch (e) {
    return skip(`its record would not resolve: ${(e as Error).message}`);
  }
  return { name: s.name, vm, ...(network ? { network } : {}) };
}

/** Pure: the store with the planned records added (a network once, VMs not already there). */
export function withImports(doc: StoreDoc, plans: ImportPlan[]): StoreDoc {
  const next = structuredClone(doc);
  for (const p of plans) {
    if (!p.vm) continue;
    if (p.network && !(next.networks ?? []).some((n) => n.name === p.network!.name)) (next.networks ??= []).push(structuredClone(p.network));
    if (!(next.vms ?? []).some((v) => v.name === p.vm!.name)) (next.vms ??= []).push(structuredClone(p.vm));
  }
  return next;
}

export interface DiscoverResult {
  found: string[];
  imported: string[];
  skipped: { name: string; why: string }[];
  /** no terminal and no --yes: listed only */
  listedOnly: boolean;
}

/**
 * Summaries of the unmanaged domains, then per importable domain a confirmation (every one with --yes). Without a
 * terminal and without --yes nothing is imported. The accepted records are written in one updateStore.
 */
export async function discover(
  runner: Runner,
  uri: string,
  doc: StoreDoc,
  o: { print: (text: string) => void; save: (change: (d: StoreDoc) => StoreDoc) => void },
): Promise<DiscoverResult> {
  const found = await listUnmanaged(runner, uri, doc);
  const nets = new Map<string, LiveNetwork | null>();
  for (const s of found) for (const n of s.networks.slice(0, 1)) if (!nets.has(n)) nets.set(n, await liveNetwork(runner, uri, n));
  const plans = found.map((s) => planImport(doc, s, nets));
  const result: DiscoverResult = { found: found.map((s) => s.name), imported: [], skipped: [], listedOnly: false };
  for (const [i, s] of found.entries()) {
    const p = plans[i]!;
    o.print(formatSummary(s) + (p.skip ? `\n  cannot import: ${p.skip}` : ""));
    if (p.skip) result.skipped.push({ name: s.name, why: p.skip });
  }
  const importable = plans.filter((p) => p.vm);
  if (!importable.length) return result;
  if (!runner.yes && !runner.interactive) {
    result.listedOnly = true;
    for (const p of importable) result.skipped.push({ name: p.name, why: "not imported: no terminal to ask and no --yes" });
    return result;
  }
  const accepted: ImportPlan[] = [];
  for (const p of importable) {
    const net = p.network ? ` and its network ${p.network.name} (firewall off)` : "";
    if (await runner.confirm("config discover", `Import ${p.name}${net} into the config store?`)) accepted.push(p);
    else result.skipped.push({ name: p.name, why: "declined" });
  }
  if (accepted.length) {
    o.save((d) => withImports(d, accepted));
    result.imported = accepted.map((p) => p.name);
  }
  return result;
}
