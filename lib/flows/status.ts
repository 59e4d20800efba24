// `aivm status`: every layer, each true, false or unknown (null) with the reason, and the next command to run.
// Every probe only reads, and the reads are few: one virsh process for everything libvirt knows, nft beside it,
// one ssh session for everything inside the guest. A layer whose probe cannot answer (libvirtd unreachable, no SSH,
// no sudo) is unknown, never false.
import { accelChoice, probeAccel } from "../accel.ts";
import type { StoreDoc, Vm } from "../config/model.ts";
import { resolveVm, type VmChoice } from "../config/resolve.ts";
import { programChecks } from "../doctor.ts";
import { domainDrift, gib, mib, networkDrift } from "../drift.ts";
import { lastLine } from "../errors.ts";
import { firewallStatus, type FwStatus } from "../fw.ts";
import { cloudInitVerdict, probeSections } from "../guest-probe.ts";
import { cachedImage, imageFiles, readManifest, sha256File } from "../image.ts";
import { vmFacts, type VmFacts } from "../libvirt/facts.ts";
import { mainDisk } from "../libvirt/parse.ts";
import { RUNNING } from "../libvirt/virsh.ts";
import { printable } from "../render.ts";
import type { Runner } from "../run.ts";
import { describeGuard, guardState } from "../share/git-guard.ts";
import { judgeFolder, PreflightContext } from "../share/preflight.ts";
import { aliasAdvice, checkAlias } from "../ssh-alias.ts";
import { defaultSshConfigFile, sshArgv } from "../ssh-config.ts";
import {
    attachmentVerdicts, guestProbeScript, nextCommands, type Layer, type LayerName, type StatusReport,
} from "../status-report.ts";
import { cachedIp, vmFiles } from "../vm/files.ts";
import { exportRoot } from "../share/names.ts";
import { join } from "node:path";

export interface StatusOptions {
  configPath: string;
  /** --vm */
  vmName?: string;
  /** the rule that chose the VM (lib/flows/target.ts), reported as `chosen` */
  chosen?: VmChoice;
  /** --detail: evidence lines and a re-hash of the base image */
  detail?: boolean;
  /** base image path -> sha256 (tests make it fast) */
  hash?: (path: string) => Promise<string>;
}

const msg = (e: unknown) => (e as Error).message.replace(/^[^:]+: /, "");
const unknown = (name: LayerName, reason: string, detail = "unknown"): Layer => ({ name, ok: null, detail, reason });

function hostLayer(runner: Runner): Layer {
  const progs = programChecks(runner.host);
  const missing = progs.filter((c) => !c.ok);
  return {
    name: "host-dependencies",
    ok: missing.length === 0,
    detail: missing.length ? `missing: ${missing.map((c) => c.name.replace(/^program /, "")).join(", ")}` : `${progs.length} programs found`,
    ...(missing.length ? { next: "aivm host install-deps" } : {}),
    evidence: progs.map((c) => `${c.name}: ${c.detail}`),
  };
}

function accelLayer(runner: Runner, vm: Vm): Layer {
  const ac = accelChoice(vm.accel, probeAccel(runner.host));
  if (ac.error) return { name: "acceleration", ok: false, detail: `accel = "kvm" but KVM cannot be used: ${ac.error}`, next: 'set accel = "auto" in the config (`aivm config edit`)' };
  const tcg = ac.warning ? `TCG fallback: ${ac.warning.replace(/^KVM is not available \((.*)\):.*$/, "KVM is not available ($1)")}` : 'TCG (accel = "tcg" in the config)';
  return { name: "acceleration", ok: true, detail: ac.type === "kvm" ? "KVM" : tcg };
}

function libvirtdLayer(vm: Vm, f: VmFacts): Layer {
  const uri = vm.paths.libvirtUri;
  return f.reachable
    ? { name: "libvirtd", ok: true, detail: `reachable at ${uri}` }
    : { name: "libvirtd", ok: false, detail: `cannot reach libvirtd at ${uri}`, next: "start libvirtd and virtlogd (`aivm doctor` checks the host)", evidence: [f.error ?? ""] };
}

function networkLayer(vm: Vm, f: VmFacts): Layer {
  const net = vm.network;
  if (!f.reachable) return unknown("network", `libvirtd is not reachable at ${vm.paths.libvirtUri}`);
  const s = f.network;
  const drift = s.xml ? networkDrift(net, s.xml) : [];
  const problems = [!s.defined && "not defined", s.defined && !s.active && "not active", s.defined && !s.autostart && "no autostart", ...drift].filter(Boolean) as string[];
  return {
    name: "network",
    ok: problems.length === 0,
    detail: problems.length ? `${net.name}: ${problems.join(", ")}` : `${net.name}: defined, active, autostart (${net.subnet} on ${s.bridge ?? net.bridge})`,
    ...(problems.length ? { next: drift.length ? `aivm net destroy ${net.name} && aivm net create ${net.name}` : `aivm net create ${net.name}` } : {}),
    evidence: [`defined=${s.defined} active=${s.active} autostart=${s.autostart} persistent=${s.persistent}`, ...drift.map((d) => `drift: ${d}`)],
  };
}

function firewallLayer(vm: Vm, fw: FwStatus | Error): Layer {
  if (fw instanceof Error) return unknown("firewall", msg(fw));
  const table = `inet ${fw.table}`;
  if (!fw.enabled) return { name: "firewall", ok: !fw.present, detail: fw.present ? `${table} is loaded but the firewall is disabled in the config` : "disabled in the config: the guests are not isolated", ...(fw.present ? { next: `aivm fw remove ${vm.network.name}` } : {}) };
  return {
    name: "firewall",
    ok: fw.equal,
    detail: !fw.present ? `${table} is absent` : fw.equal ? `${table} loaded, equal to the rendered one` : `${table} differs from the rendered one (${fw.drift.length} difference(s))`,
    ...(fw.equal ? {} : { next: `aivm fw apply ${vm.network.name}` }),
    evidence: fw.drift,
  };
}

async function imageLayer(vm: Vm, o: StatusOptions): Promise<Layer> {
  const img = cachedImage(vm.paths, vm.image.sha256);
  if (!img) return { name: "image", ok: false, detail: `sha256 ${vm.image.sha256.slice(0, 12)}... is not cached in ${vm.paths.imageCache}`, next: "aivm image fetch" };
  if (!o.detail) return { name: "image", ok: true, detail: `cached (not re-hashed; --detail re-hashes): ${img.path}` };
  const pinned = readManifest(imageFiles(vm.paths.imageCache, vm.image.sha256).manifest)?.sha256 ?? vm.image.sha256;
  try {
    const got = await (o.hash ?? sha256File)(img.path);
    return got === pinned
      ? { name: "image", ok: true, detail: `cached, sha256 verified: ${img.path}` }
      : { name: "image", ok: false, detail: `${img.path}: sha256 is ${got.slice(0, 12)}..., the manifest pins ${pinned.slice(0, 12)}...`, next: "aivm image verify" };
  } catch (e) {
    return unknown("image", `cannot read ${img.path}: ${msg(e)}`, "cached");
  }
}

function vmLayer(vm: Vm, f: VmFacts, hasVm: boolean): Layer {
  if (!hasVm) return { name: "vm", ok: false, detail: `no VM in the config store (${vm.name} would be created from [defaults])`, next: "aivm up" };
  if (!f.reachable) return unknown("vm", `libvirtd is not reachable at ${vm.paths.libvirtUri}`);
  if (f.state === null) return unknown("vm", f.error ?? "the VM state is unknown");
  if (f.state === "absent") return { name: "vm", ok: false, detail: `${vm.name} is not defined in libvirt`, next: vm.imported ? `the imported domain ${vm.name} is gone: remove its record (\`aivm config edit\`)` : "aivm vm create" };
  if (RUNNING.has(f.state)) return { name: "vm", ok: true, detail: `${vm.name}: ${f.state}` };
  return { name: "vm", ok: false, detail: `${vm.name}: ${f.state}`, next: f.state === "in shutdown" ? "aivm vm up (once it has stopped)" : "aivm vm up" };
}

interface GuestLayers { ssh: Layer; cloudInit: Layer; attachments: Layer }

/** A virtiofsd serving this VM (its export root, or a `shared` folder), with its open files read from /proc. */
export interface VirtiofsdFiles { pid: number; source: string; open: number | null; limit: number | null }

/**
 * The open file descriptors of each virtiofsd serving the VM, from /proc through runner.host (null: not readable,
 * e.g. without root). A guest indexer (updatedb) walking the shares raises them until virtiofsd runs out.
 */
export function virtiofsdFiles(host: Runner["host"], vm: Vm, proc = "/proc"): VirtiofsdFiles[] {
  const sources = [exportRoot(vm), ...vm.attachments.filter((a) => a.mode === "shared").map((a) => a.host_path)];
  const out: VirtiofsdFiles[] = [];
  for (const d of host.readDir(proc) ?? []) {
    if (!/^\d+$/.test(d)) continue;
    const cmd = host.readFile(join(proc, d, "cmdline"))?.split("\0") ?? [];
    if (!cmd[0]?.endsWith("virtiofsd")) continue;
    const source = sources.find((src) => cmd.some((a) => a === `--shared-dir=${src}` || new RegExp(`(^|[,=])source=${src.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(,|$)`).test(a)) || cmd.includes(src));
    if (!source) continue;
    const fds = host.readDir(join(proc, d, "fd"));
    const limit = /^Max open files\s+(\d+)/m.exec(host.readFile(join(proc, d, "limits")) ?? "")?.[1];
    out.push({ pid: Number(d), source, open: fds ? fds.length : null, limit: limit ? Number(limit) : null });
  }
  return out;
}

function fdEvidence(f: VirtiofsdFiles[]): string[] {
  if (!f.length) return ["virtiofsd: none running for this VM (or not visible in /proc)"];
  return f.map((x) => `virtiofsd pid ${x.pid} (${x.source}): ${x.open === null ? "open files unknown (cannot read its /proc/PID/fd: run as root)" : `${x.open} open files`}${x.limit !== null ? `, limit ${x.limit}` : ""}`);
}

/** ssh, cloud-init and attachments: one ssh session with the pinned host key (BatchMode, short timeout). */
async function guestLayers(runner: Runner, vm: Vm, ip: string | null, why: string, ctx: PreflightContext): Promise<GuestLayers> {
  const configured = `${vm.attachments.length} configured`;
  const none: Layer = { name: "attachments", ok: true, detail: "none configured" };
  const skip = (reason: string): GuestLayers => ({
    ssh: unknown("ssh", reason, "not tried"),
    cloudInit: unknown("cloud-init", reason, "not checked"),
    attachments: vm.attachments.length ? hostOnlyAttachments(runner, vm, ctx) ?? unknown("attachments", `${configured}; cannot look inside the guest: ${reason}`, configured) : none,
  });
  if (!ip) return skip(why);
  const known = vmFiles(vm).knownHosts;
  if (!runner.host.exists(known)) return skip(vm.imported ? "imported VM: aivm pinned no host key for it" : `no pinned host key (${known} is missing)`);
  const r = await runner.read(sshArgv(vm, ip, { batch: true, connectTimeoutS: 3, command: [guestProbeScript(vm.attachments)] }), { nothrow: true, timeoutMs: 20_000 });
  const sections = probeSections(r.stdout);
  if (!sections.has("cloud-init")) {
    const reason = printable(lastLine(r.stderr)) || `ssh exited ${r.exitCode}`;
    const hostKey = /host key verification failed|REMOTE HOST IDENTIFICATION/i.test(r.stderr);
    const ssh: Layer = { name: "ssh", ok: false, detail: `${vm.user}@${ip}: ${reason}`, next: hostKey ? "the guest's host key is not the pinned one: recreate the VM (aivm vm delete, aivm up) if you did not change it yourself" : "aivm vm wait", evidence: r.stderr.trim().split("\n") };
    return { ...skip("SSH does not answer"), ssh };
  }
  const ci = cloudInitVerdict(sections.get("cloud-init")!);
  ci.errors = ci.errors.map(printable); // the guest wrote them
  const cloudInit: Layer = ci.state === "done"
    ? { name: "cloud-init", ok: true, detail: "done" }
    : ci.state === "error"
      ? { name: "cloud-init", ok: false, detail: `status: error (${ci.errors[0] ?? "see the guest"})`, next: "aivm vm ssh -- cloud-init status --long", evidence: ci.errors }
      : { name: "cloud-init", ok: false, detail: `status: ${ci.state === "running" ? "running" : "not started"}`, next: "aivm vm wait" };
  let attachments = none;
  if (vm.attachments.length) {
    const v = attachmentVerdicts(vm.attachments, sections.get("attachments") ?? "");
    attachments = attachmentsLayer(runner, vm, v, ctx);
  }
  // the guest answers aivm; does `ssh <vm>` (the user's own ssh config, what VS Code uses) reach it the same way?
  const sshFile = defaultSshConfigFile();
  const alias = runner.host.exists(sshFile) ? await checkAlias(runner, vm, ip, known, sshFile) : [];
  const ssh: Layer = alias.length
    ? { name: "ssh", ok: false, detail: aliasAdvice(vm, sshFile, alias), next: `edit ${sshFile}: aivm's block for ${vm.name} must come before any entry that matches ${vm.name}`, evidence: alias }
    : { name: "ssh", ok: true, detail: `${vm.user}@${ip} with the pinned host key` };
  return { ssh, cloudInit, attachments };
}

function driftLayer(doc: StoreDoc, vm: Vm, f: VmFacts, fw: FwStatus | null, why: string): Layer {
  const p = f.persistent;
  if (!p) return unknown("drift", f.state === "absent" || f.state === null ? why : "cannot read the domain definition", "not compared");
  const disk = mainDisk(f.live ?? p);
  const diskBytes = disk?.target ? (f.disks.get(disk.target) ?? null) : null;
  const items = domainDrift(vm, { persistent: p, live: f.live, diskBytes, fw });
  const applyable = items.filter((i) => !i.pending && i.what !== "virtiofs");
  const pendingOnly = items.length > 0 && items.every((i) => i.pending);
  const flag = (doc.vms ?? []).length > 1 ? ` --vm ${vm.name}` : "";
  return {
    name: "drift",
    ok: items.length === 0,
    detail: items.length ? items.map((i) => i.text).join("; ") : `none (${p.vcpus} vCPUs, ${mib(p.memoryKib ?? 0)} MiB, disk ${diskBytes === null ? "size unknown" : `${gib(diskBytes)} GiB`}, ${p.filesystems.length} virtiofs device(s))`,
    ...(items.length ? { next: pendingOnly ? `aivm vm restart${flag}` : applyable.length ? `aivm vm update${flag}` : `aivm vm restart${flag}` } : {}),
    evidence: [
      `config: ${vm.cpus} vCPUs, ${vm.memoryMib} MiB, disk ${vm.diskGib} GiB, ${vm.attachments.length} attachment(s)`,
      `persistent: ${p.vcpus} vCPUs, ${mib(p.memoryKib ?? 0)} MiB; live: ${f.live ? `${f.live.vcpus} vCPUs, ${mib(f.live.memoryKib ?? 0)} MiB` : "not running"}`,
      `disk: ${disk?.file ?? "?"} (${disk?.target ?? "?"}) ${diskBytes ?? "?"} bytes`,
      ...p.filesystems.map((x) => `filesystem: ${x.driver ?? "?"} ${x.source ?? "?"} -> ${x.target ?? "?"}${x.readonly ? " (ro)" : ""}`),
    ],
  };
}

/** The host-side verdict per attachment: what the safety preflight says of it now, and its git guard. */
function hostVerdicts(runner: Runner, vm: Vm, ctx: PreflightContext): { refused: string | null; guard: string }[] {
  return vm.attachments.map((a) => {
    const v = judgeFolder(runner.host, a.host_path, ctx);
    return { refused: v.refused ?? v.sensitive ?? null, guard: describeGuard(guardState(runner.host, a)) };
  });
}

/** A saved attachment the preflight refuses is false even when the guest cannot be asked (it is never bound without consent). */
function hostOnlyAttachments(runner: Runner, vm: Vm, ctx: PreflightContext): Layer | null {
  const refused = hostVerdicts(runner, vm, ctx).map((h, i) => (h.refused ? `${vm.attachments[i]!.host_path}: not bound without consent: ${h.refused}` : null)).filter((x): x is string => !!x);
  return refused.length ? { name: "attachments", ok: false, detail: refused.join("; "), next: "aivm share detach DIR (or bind it on purpose: aivm vm up --yes)" } : null;
}

function attachmentsLayer(runner: Runner, vm: Vm, guest: { ok: boolean; text: string }[], ctx: PreflightContext): Layer {
  const host = hostVerdicts(runner, vm, ctx);
  const rows = guest.map((g, i) => (host[i]!.refused ? { ok: false, text: `${vm.attachments[i]!.host_path}: not bound without consent: ${host[i]!.refused}` } : g));
  const bad = rows.filter((x) => !x.ok);
  return {
    name: "attachments",
    ok: bad.length === 0,
    detail: bad.length ? bad.map((x) => x.text).join("; ") : `${rows.length} mounted with the right access`,
    ...(bad.length ? { next: host.some((h) => h.refused) ? "aivm share detach DIR (or bind it on purpose: aivm vm up --yes)" : "aivm share attach (again) or `aivm vm restart`; see `aivm share list`" } : {}),
    evidence: rows.map((x, i) => `${x.text}; ${host[i]!.guard}`),
  };
}

/** Without a VM, `aivm up` creates these too: no separate command for them. */
const UP_COVERS = new Set<LayerName>(["network", "firewall", "image"]);

/** Collect every layer. Never throws for a probe that fails: that layer becomes unknown with the reason. */
export async function collectStatus(runner: Runner, doc: StoreDoc, o: StatusOptions): Promise<StatusReport> {
  const hasVm = (doc.vms ?? []).length > 0 || o.vmName !== undefined;
  const vm = resolveVm(doc, o.vmName);
  const [facts, fwOrError] = await Promise.all([
    vmFacts(runner, vm, { domain: hasVm }),
    firewallStatus(runner, vm.network).catch((e: Error) => e),
  ]);
  const fw = fwOrError instanceof Error ? null : fwOrError;
  const vmL = vmLayer(vm, facts, hasVm);
  const running = facts.state !== null && RUNNING.has(facts.state);
  const notRunning = !hasVm ? "no VM in the config store" : facts.state === null ? vmL.reason ?? "the VM state is unknown" : `the VM is ${facts.state === "absent" ? "not created" : facts.state}`;
  const ipL: Layer = !running
    ? unknown("ip", notRunning, "none")
    : facts.ip ? { name: "ip", ok: true, detail: facts.ip } : { name: "ip", ok: false, detail: `no DHCP lease on ${vm.network.name} yet${cachedIp(vm) ? ` (last seen: ${cachedIp(vm)})` : ""}`, next: "aivm vm wait" };
  const guest = await guestLayers(runner, vm, running ? facts.ip : null, running ? "no IP address" : notRunning, { configPath: o.configPath, paths: vm.paths });
  if (o.detail && running) {
    const files = virtiofsdFiles(runner.host, vm);
    guest.attachments.evidence = [...(guest.attachments.evidence ?? []), ...fdEvidence(files)];
    // near the limit: the shares are about to fail in the guest ("Too many open files")
    const full = files.find((x) => x.open !== null && x.limit !== null && x.open >= 0.9 * x.limit);
    if (full && guest.attachments.ok !== null) {
      guest.attachments = { ...guest.attachments, ok: false, detail: `virtiofsd pid ${full.pid} holds ${full.open} of its ${full.limit} file descriptors`, next: "find what in the guest holds files open in the shared folders (an indexer like updatedb?), or `aivm vm restart`" };
    }
  }
  const layers: Layer[] = [
    hostLayer(runner), accelLayer(runner, vm), libvirtdLayer(vm, facts), networkLayer(vm, facts), firewallLayer(vm, fwOrError),
    await imageLayer(vm, o), vmL, ipL, guest.ssh, guest.cloudInit, guest.attachments, driftLayer(doc, vm, facts, fw, notRunning),
  ];
  const report: StatusReport = {
    vm: hasVm ? vm.name : null,
    chosen: hasVm && o.chosen ? { rule: o.chosen.rule, why: o.chosen.why } : null,
    recorded: vm.recorded,
    config: o.configPath,
    ok: layers.every((l) => l.ok === true),
    layers,
    next: nextCommands(hasVm ? layers : layers.filter((l) => !UP_COVERS.has(l.name)), o.configPath, runner.host.exists(o.configPath)),
  };
  if (!o.detail) for (const l of report.layers) delete l.evidence;
  return report;
}
