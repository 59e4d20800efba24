// `aivm status`: every layer, each true, false or unknown (null) with the reason, and the next command to run.
// Every probe only reads. A layer whose probe cannot answer (libvirtd unreachable, no SSH, no sudo) is unknown, never false.
import { existsSync } from "node:fs";
import { programChecks, Check } from "../host.ts";
import { probeAccel, accelChoice, AccelProbe } from "../accel.ts";
import { cachedImage, imageFiles, readManifest, sha256File } from "../image.ts";
import type { Runner } from "../run.ts";
import type { StoreDoc, Vm } from "../config/model.ts";
import { nextCommands, Layer, type LayerName, type StatusReport, attachmentProbe, attachmentVerdicts } from "../status-report.ts";
import { resolveVm } from "../config/resolve.ts";
import { domainState, virshRead, type DomainState } from "../libvirt/virsh.ts";
import { networkStatus } from "../net.ts";
import { firewallStatus, FwStatus } from "../fw.ts";
import { parseDomainXml, LiveDomain, mainDisk, parseBlkCapacity, parseDomifaddr } from "../libvirt/parse.ts";
import { vmIp } from "../vm/ip.ts";
import { cachedIp, vmFiles } from "../vm/files.ts";
import { sshArgv } from "../ssh-config.ts";
import { domainDrift, gib, mib } from "../drift.ts";
import { macAddress } from "../domain.ts";

export interface Probes {
  programs(): Check[];
  accel(): AccelProbe;
  /** base image path -> sha256 (slow) */
  hash(path: string): Promise<string>;
}

export const realProbes: Probes = { programs: () => programChecks(), accel: () => probeAccel(), hash: sha256File };

export interface StatusOptions {
  configPath: string;
  /** --vm */
  vmName?: string;
  /** --detail: evidence lines and a re-hash of the base image */
  detail?: boolean;
  probes?: Probes;
}

const msg = (e: unknown) => (e as Error).message.replace(/^[^:]+: /, "");

const lastLine = (s: string) => s.trim().split("\n").filter((x) => x.trim()).pop()?.trim().replace(/^error:\s*/, "") ?? "";

const RUNNING = new Set(["running", "idle", "blocked", "no state"]);

/** Collect every layer. Never throws for a probe that fails: that layer becomes unknown with the reason. */
export async function collectStatus(runner: Runner, doc: StoreDoc, o: StatusOptions): Promise<StatusReport> {
  const probes = o.probes ?? realProbes;
  const hasVm = (doc.vms ?? []).length > 0 || o.vmName !== undefined;
  const vm = resolveVm(doc, o.vmName);
  const uri = vm.paths.libvirtUri;
  const layers: Layer[] = [];
  const add = (l: Layer) => (layers.push(l), l);
  const unknown = (name: LayerName, reason: string, detail = "unknown"): Layer => add({ name, ok: null, detail, reason });

  // host dependencies
  const progs = probes.programs();
  const missing = progs.filter((c) => !c.ok);
  add({
    name: "host-dependencies",
    ok: missing.length === 0,
    detail: missing.length ? `missing: ${missing.map((c) => c.name.replace(/^program /, "")).join(", ")}` : `${progs.length} programs found`,
    ...(missing.length ? { next: "aivm host install-deps" } : {}),
    evidence: progs.map((c) => `${c.name}: ${c.detail}`),
  });

  // acceleration
  const ac = accelChoice(vm.accel, probes.accel());
  add(ac.error
    ? { name: "acceleration", ok: false, detail: `accel = "kvm" but KVM cannot be used: ${ac.error}`, next: 'set accel = "auto" in the config (`aivm config edit`)' }
    : { name: "acceleration", ok: true, detail: ac.type === "kvm" ? "KVM" : ac.warning ? `TCG fallback: ${ac.warning.replace(/^KVM is not available \((.*)\):.*$/, "KVM is not available ($1)")}` : 'TCG (accel = "tcg" in the config)' });

  // libvirtd
  let libvirtUp = false;
  try {
    const r = await virshRead(runner, uri, ["version", "--daemon"]);
    libvirtUp = r.exitCode === 0;
    add(libvirtUp ? { name: "libvirtd", ok: true, detail: `reachable at ${uri}` } : { name: "libvirtd", ok: false, detail: `${uri}: ${lastLine(r.stderr) || `exit ${r.exitCode}`}`, next: "start libvirtd and virtlogd (`aivm doctor` checks the host)" });
  } catch (e) {
    add({ name: "libvirtd", ok: false, detail: `cannot reach libvirtd at ${uri}`, next: "start libvirtd and virtlogd (`aivm doctor` checks the host)", evidence: [msg(e)] });
  }
  const noLibvirt = `libvirtd is not reachable at ${uri}`;

  // network
  const net = vm.network;
  if (!libvirtUp) unknown("network", noLibvirt);
  else {
    try {
      const s = await networkStatus(runner, uri, net, { leases: false });
      const problems = [!s.defined && "not defined", s.defined && !s.active && "not active", s.defined && !s.autostart && "no autostart", ...s.drift].filter(Boolean) as string[];
      add({
        name: "network",
        ok: problems.length === 0,
        detail: problems.length ? `${net.name}: ${problems.join(", ")}` : `${net.name}: defined, active, autostart (${net.subnet} on ${s.bridge})`,
        ...(problems.length ? { next: s.drift.length ? `aivm net destroy ${net.name} && aivm net create ${net.name}` : `aivm net create ${net.name}` } : {}),
        evidence: [`defined=${s.defined} active=${s.active} autostart=${s.autostart} persistent=${s.persistent}`, ...s.drift.map((d) => `drift: ${d}`)],
      });
    } catch (e) {
      unknown("network", msg(e));
    }
  }

  // firewall (the host's nftables: needs no libvirtd)
  let fw: FwStatus | null = null;
  try {
    fw = await firewallStatus(runner, net);
    const table = `inet ${fw.table}`;
    if (!fw.enabled) add({ name: "firewall", ok: !fw.present, detail: fw.present ? `${table} is loaded but the firewall is disabled in the config` : "disabled in the config: the guests are not isolated", ...(fw.present ? { next: `aivm fw remove ${net.name}` } : {}) });
    else add({
      name: "firewall",
      ok: fw.equal,
      detail: !fw.present ? `${table} is absent` : fw.equal ? `${table} loaded, equal to the rendered one` : `${table} differs from the rendered one (${fw.drift.length} difference(s))`,
      ...(fw.equal ? {} : { next: `aivm fw apply ${net.name}` }),
      evidence: fw.drift,
    });
  } catch (e) {
    unknown("firewall", msg(e));
  }

  // base image
  const img = cachedImage(vm.paths, vm.image.sha256);
  if (!img) add({ name: "image", ok: false, detail: `sha256 ${vm.image.sha256.slice(0, 12)}... is not cached in ${vm.paths.imageCache}`, next: "aivm image fetch" });
  else if (!o.detail) add({ name: "image", ok: true, detail: `cached (not re-hashed; --detail re-hashes): ${img.path}` });
  else {
    const pinned = readManifest(imageFiles(vm.paths.imageCache, vm.image.sha256).manifest)?.sha256 ?? vm.image.sha256;
    try {
      const got = await probes.hash(img.path);
      add(got === pinned
        ? { name: "image", ok: true, detail: `cached, sha256 verified: ${img.path}` }
        : { name: "image", ok: false, detail: `${img.path}: sha256 is ${got.slice(0, 12)}..., the manifest pins ${pinned.slice(0, 12)}...`, next: "aivm image verify" });
    } catch (e) {
      unknown("image", `cannot read ${img.path}: ${msg(e)}`, "cached");
    }
  }

  // vm
  let state: DomainState | null = null;
  if (!hasVm) add({ name: "vm", ok: false, detail: `no VM in the config store (${vm.name} would be created from [defaults])`, next: "aivm up" });
  else if (!libvirtUp) unknown("vm", noLibvirt);
  else {
    try {
      state = await domainState(runner, uri, vm.name);
      if (state === "absent") add({ name: "vm", ok: false, detail: `${vm.name} is not defined in libvirt`, next: vm.imported ? `the imported domain ${vm.name} is gone: remove its record (\`aivm config edit\`)` : "aivm vm create" });
      else if (RUNNING.has(state)) add({ name: "vm", ok: true, detail: `${vm.name}: ${state}` });
      else add({ name: "vm", ok: false, detail: `${vm.name}: ${state}`, next: state === "in shutdown" ? "aivm vm up (once it has stopped)" : "aivm vm up" });
    } catch (e) {
      unknown("vm", msg(e));
    }
  }
  const running = state !== null && RUNNING.has(state);
  const notRunning = !hasVm ? "no VM in the config store" : state === null ? layers.at(-1)!.reason ?? "the VM state is unknown" : `the VM is ${state === "absent" ? "not created" : state}`;

  // the persistent + live definitions (drift, imported VMs' MAC)
  let persistent: LiveDomain | null = null;
  let live: LiveDomain | null = null;
  if (state !== null && state !== "absent") {
    const px = await virshRead(runner, uri, ["dumpxml", "--inactive", vm.name]).catch(() => null);
    if (px?.exitCode === 0) persistent = parseDomainXml(px.stdout);
    if (running) {
      const lx = await virshRead(runner, uri, ["dumpxml", vm.name]).catch(() => null);
      if (lx?.exitCode === 0) live = parseDomainXml(lx.stdout);
    }
  }

  // ip
  let ip: string | null = null;
  if (!running) unknown("ip", notRunning, "none");
  else {
    try {
      ip = vm.imported ? await importedIp(runner, vm, persistent) : await vmIp(runner, vm);
      add(ip ? { name: "ip", ok: true, detail: ip } : { name: "ip", ok: false, detail: `no DHCP lease on ${net.name} yet${cachedIp(vm) ? ` (last seen: ${cachedIp(vm)})` : ""}`, next: "aivm vm wait" });
    } catch (e) {
      unknown("ip", msg(e), "none");
    }
  }

  // ssh (pinned host key, BatchMode, short timeout)
  let sshOk = false;
  let noSsh = "SSH does not answer";
  const known = vmFiles(vm).knownHosts;
  if (!ip) unknown("ssh", (noSsh = running ? "no IP address" : notRunning), "not tried");
  else if (!existsSync(known)) unknown("ssh", (noSsh = vm.imported ? "imported VM: aivm pinned no host key for it" : `no pinned host key (${known} is missing)`), "not tried");
  else {
    const r = await runner.read(sshArgv(vm, ip, { batch: true, connectTimeoutS: 3, command: ["true"] }), { nothrow: true, timeoutMs: 15_000 });
    sshOk = r.exitCode === 0;
    if (sshOk) add({ name: "ssh", ok: true, detail: `${vm.user}@${ip} with the pinned host key` });
    else {
      const why = lastLine(r.stderr) || `ssh exited ${r.exitCode}`;
      const hostKey = /host key verification failed|REMOTE HOST IDENTIFICATION/i.test(r.stderr);
      add({ name: "ssh", ok: false, detail: `${vm.user}@${ip}: ${why}`, next: hostKey ? `the guest's host key is not the pinned one: recreate the VM (aivm vm delete, aivm up) if you did not change it yourself` : "aivm vm wait", evidence: r.stderr.trim().split("\n") });
    }
  }

  // cloud-init
  if (!sshOk) unknown("cloud-init", noSsh, "not checked");
  else add(await cloudInitLayer(runner, vm, ip!));

  // attachments
  if (vm.attachments.length === 0) add({ name: "attachments", ok: true, detail: "none configured" });
  else if (!sshOk) unknown("attachments", `${vm.attachments.length} configured; cannot look inside the guest: ${noSsh}`, `${vm.attachments.length} configured`);
  else add(await attachmentsLayer(runner, vm, ip!));

  // drift
  if (!persistent) unknown("drift", state === "absent" || state === null ? notRunning : "cannot read the domain definition", "not compared");
  else {
    const disk = mainDisk(live ?? persistent);
    let diskBytes: number | null = null;
    if (disk?.target) {
      const r = await virshRead(runner, uri, ["domblkinfo", vm.name, disk.target]).catch(() => null);
      if (r?.exitCode === 0) diskBytes = parseBlkCapacity(r.stdout);
    }
    const items = domainDrift(vm, { persistent, live, diskBytes, fw });
    const applyable = items.filter((i) => !i.pending && i.what !== "virtiofs");
    const pendingOnly = items.length > 0 && items.every((i) => i.pending);
    add({
      name: "drift",
      ok: items.length === 0,
      detail: items.length ? items.map((i) => i.text).join("; ") : `none (${persistent.vcpus} vCPUs, ${mib(persistent.memoryKib ?? 0)} MiB, disk ${diskBytes === null ? "size unknown" : `${gib(diskBytes)} GiB`}, ${persistent.filesystems.length} virtiofs device(s))`,
      ...(items.length ? { next: pendingOnly ? `aivm vm restart${vmFlag(doc, vm)}` : applyable.length ? `aivm vm update${vmFlag(doc, vm)}` : `aivm vm restart${vmFlag(doc, vm)}` } : {}),
      evidence: [
        `config: ${vm.cpus} vCPUs, ${vm.memoryMib} MiB, disk ${vm.diskGib} GiB, ${vm.attachments.length} attachment(s)`,
        `persistent: ${persistent.vcpus} vCPUs, ${mib(persistent.memoryKib ?? 0)} MiB; live: ${live ? `${live.vcpus} vCPUs, ${mib(live.memoryKib ?? 0)} MiB` : "not running"}`,
        `disk: ${disk?.file ?? "?"} (${disk?.target ?? "?"}) ${diskBytes ?? "?"} bytes`,
        ...persistent.filesystems.map((f) => `filesystem: ${f.driver ?? "?"} ${f.source ?? "?"} -> ${f.target ?? "?"}${f.readonly ? " (ro)" : ""}`),
      ],
    });
  }

  const report: StatusReport = {
    vm: hasVm ? vm.name : null,
    recorded: vm.recorded,
    config: o.configPath,
    ok: layers.every((l) => l.ok === true),
    layers,
    next: nextCommands(hasVm ? layers : layers.filter((l) => !UP_COVERS.has(l.name)), o.configPath, existsSync(o.configPath)),
  };
  if (!o.detail) for (const l of report.layers) delete l.evidence;
  return report;
}

/** Without a VM, `aivm up` creates these too: no separate command for them. */
const UP_COVERS = new Set<LayerName>(["network", "firewall", "image"]);

function vmFlag(doc: StoreDoc, vm: Vm): string {
  return (doc.vms ?? []).length > 1 ? ` --vm ${vm.name}` : "";
}

/** An imported VM's MAC is its own, not the one aivm derives from the name. */
async function importedIp(runner: Runner, vm: Vm, d: LiveDomain | null): Promise<string | null> {
  const mac = d?.interfaces.find((i) => i.network === vm.network.name)?.mac ?? d?.interfaces[0]?.mac ?? macAddress(vm.name);
  const r = await virshRead(runner, vm.paths.libvirtUri, ["domifaddr", vm.name, "--source", "lease"]);
  return r.exitCode === 0 ? parseDomifaddr(r.stdout, mac) : null;
}

/** `cloud-init status` in the guest: done -> true; running -> false (wait); error -> false. */
export async function cloudInitLayer(runner: Runner, vm: Vm, ip: string): Promise<Layer> {
  const r = await runner.read(sshArgv(vm, ip, { batch: true, connectTimeoutS: 3, command: ["cloud-init", "status"] }), { nothrow: true, timeoutMs: 20_000 });
  const status = /status:\s*(\S+)/.exec(r.stdout)?.[1];
  if (r.exitCode === 127) {
    const t = await runner.read(sshArgv(vm, ip, { batch: true, connectTimeoutS: 3, command: ["test", "-f", "/var/lib/cloud/instance/boot-finished"] }), { nothrow: true, timeoutMs: 20_000 });
    return t.exitCode === 0 ? { name: "cloud-init", ok: true, detail: "finished (boot-finished present; no cloud-init CLI)" } : { name: "cloud-init", ok: false, detail: "not finished (no boot-finished marker)", next: "aivm vm wait" };
  }
  if (status === "done") return { name: "cloud-init", ok: true, detail: "done" };
  if (status === "running" || status === "not") return { name: "cloud-init", ok: false, detail: `status: ${status === "not" ? "not started" : "running"}`, next: "aivm vm wait" };
  if (status === "error" || status === "degraded" || r.exitCode === 1 || r.exitCode === 2) {
    return { name: "cloud-init", ok: false, detail: `status: ${status ?? `exit ${r.exitCode}`}`, next: "aivm vm ssh -- cloud-init status --long", evidence: r.stdout.trim().split("\n") };
  }
  if (r.exitCode === 255) return { name: "cloud-init", ok: null, detail: "not checked", reason: `ssh failed: ${lastLine(r.stderr)}` };
  return { name: "cloud-init", ok: null, detail: "not checked", reason: `unexpected answer from cloud-init status (exit ${r.exitCode}): ${lastLine(r.stdout) || lastLine(r.stderr)}` };
}

async function attachmentsLayer(runner: Runner, vm: Vm, ip: string): Promise<Layer> {
  const script = vm.attachments.map((a, i) => attachmentProbe(i, a)).join("; ");
  const r = await runner.read(sshArgv(vm, ip, { batch: true, connectTimeoutS: 3, command: [script] }), { nothrow: true, timeoutMs: 20_000 });
  if (r.exitCode !== 0) return { name: "attachments", ok: null, detail: `${vm.attachments.length} configured`, reason: `the guest probe failed: ${lastLine(r.stderr) || `exit ${r.exitCode}`}` };
  const v = attachmentVerdicts(vm.attachments, r.stdout);
  const bad = v.filter((x) => !x.ok);
  return {
    name: "attachments",
    ok: bad.length === 0,
    detail: bad.length ? bad.map((x) => x.text).join("; ") : `${v.length} mounted with the right access`,
    ...(bad.length ? { next: `aivm share attach (again) or \`aivm vm restart\`; see \`aivm share list\`` } : {}),
    evidence: v.map((x) => x.text),
  };
}
