// `aivm list`: VMs, networks and attachments from the store, with live state from libvirt when it answers.
import type { Runner } from "../run.ts";
import type { StoreDoc } from "../config/model.ts";
import { attachmentDefaults, networkNames, resolveNetwork, resolvePaths, resolveVm, vmNames } from "../config/resolve.ts";
import { parseTable } from "../libvirt/parse.ts";
import { vmStatus, VmStatus } from "../vm/ip.ts";
import { virshBatch } from "../libvirt/facts.ts";
import { lastLine } from "../errors.ts";
import { cachedIp } from "../vm/files.ts";

export const SECTIONS = ["vms", "networks", "attachments"] as const;
export type Section = (typeof SECTIONS)[number];

/** What `aivm list` prints; a section not asked for (`--section`) is absent, and so is `libvirt` when no section needs it. */
export interface Listing {
  libvirt?: { reachable: boolean; uri: string; error?: string };
  vms?: { name: string; recorded: boolean; state: string; network: string; ip: string | null; attachments: number }[];
  networks?: { name: string; recorded: boolean; active: boolean | null; bridge: string; subnet: string; vms: string[] }[];
  attachments?: { host_path: string; vm: string; mode: string; access: string; guest_dst: string }[];
}

export async function listAll(runner: Runner, doc: StoreDoc, o: { sections?: readonly Section[] } = {}): Promise<Listing> {
  const want = o.sections ?? SECTIONS;
  const uri = resolvePaths(doc).libvirtUri;
  let domains: Map<string, string> | null = null;
  let nets: Map<string, string> | null = null;
  let error: string | undefined;
  const live = want.includes("vms") || want.includes("networks");
  if (live) try {
    // one virsh process for both questions
    const b = await virshBatch(runner, uri, [["list", "--all"], ["net-list", "--all"]]);
    if (b.stderr.trim() && !b.outputs.some((o) => o.trim())) error = lastLine(b.stderr);
    else {
      domains = parseTable(b.outputs[0]!, 1, [2]);
      nets = parseTable(b.outputs[1]!, 0, [1, 2]);
    }
  } catch (e) {
    error = (e as Error).message;
  }
  const vms = vmNames(doc).map((name) => {
    const vm = resolveVm(doc, name);
    return {
      name,
      recorded: vm.recorded,
      state: domains ? (domains.get(name) ?? "absent") : "unknown (libvirtd unreachable)",
      network: vm.network.name,
      ip: cachedIp(vm), // a malformed ip file is no address (it was shown as one)
      attachments: vm.attachments.length,
    };
  });
  const networks = networkNames(doc).map((name) => {
    const n = resolveNetwork(doc, name);
    return {
      name,
      recorded: (doc.networks ?? []).some((x) => x.name === name),
      active: nets ? nets.get(name) === "active" : null,
      bridge: n.bridge,
      subnet: n.subnet,
      vms: vms.filter((v) => v.network === name).map((v) => v.name),
    };
  });
  const attachments = (doc.vms ?? []).flatMap((v) => (v.attachments ?? []).map(attachmentDefaults).map((a) => ({ host_path: a.host_path, vm: v.name, mode: a.mode, access: a.access, guest_dst: a.guest_dst })));
  const listing: Listing = live ? { libvirt: { reachable: !!domains && !!nets, uri, ...(error ? { error } : {}) } } : {};
  for (const s of want) {
    if (s === "vms") listing.vms = vms;
    else if (s === "networks") listing.networks = networks;
    else listing.attachments = attachments;
  }
  return listing;
}

/** The sections present in the listing, in the order they were asked for. */
export function formatListing(l: Listing): string {
  const rows: string[] = [];
  for (const key of Object.keys(l)) {
    if (key === "vms") {
      rows.push("VMS");
      for (const v of l.vms!) rows.push(`  ${v.name}  state=${v.state}  network=${v.network}  ip=${v.ip ?? "-"}  attachments=${v.attachments}${v.recorded ? "" : "  (from [defaults], not created)"}`);
    } else if (key === "networks") {
      rows.push("NETWORKS");
      for (const n of l.networks!) rows.push(`  ${n.name}  active=${n.active === null ? "unknown" : n.active ? "yes" : "no"}  bridge=${n.bridge}  subnet=${n.subnet}  vms=${n.vms.join(",") || "-"}`);
    } else if (key === "attachments") {
      rows.push("ATTACHMENTS");
      for (const a of l.attachments!) rows.push(`  ${a.host_path}  vm=${a.vm}  mode=${a.mode}  access=${a.access}  guest=${a.guest_dst}`);
      if (!l.attachments!.length) rows.push("  (none)");
    }
  }
  return rows.join("\n");
}

/** `aivm vm list`: each VM's state, network and IP. */
export async function listVms(runner: Runner, doc: StoreDoc): Promise<VmStatus[]> {
  const rows: VmStatus[] = [];
  for (const n of vmNames(doc)) rows.push(await vmStatus(runner, resolveVm(doc, n)));
  return rows;
}
