// `aivm status`: one line per layer, each true, false or unknown (null) with the reason, and the next command to run.
// Every probe only reads. A layer whose probe cannot answer (libvirtd unreachable, no SSH, no sudo) is unknown, never false.
import { existsSync } from "node:fs";
import { isDefaultConfigPath, resolveVm, type Network, type StoreDoc, type Vm } from "./config.ts";
import { accelChoice, probeAccel, type AccelProbe } from "./accel.ts";
import { macAddress } from "./domain.ts";
import { firewallStatus, type FwStatus } from "./fw.ts";
import { programChecks, type Check } from "./host.ts";
import { cachedImage, readManifest, imageFiles, sha256File } from "./image.ts";
import { networkStatus } from "./net.ts";
import { vmFilesystems } from "./share.ts";
import { shellQuote, type Runner } from "./run.ts";
import { sshArgv } from "./ssh-config.ts";
import { cachedIp, domainState, parseDomifaddr, vmFiles, vmIp, type DomainState } from "./vm.ts";
import { virshRead } from "./virsh.ts";

export type Tri = true | false | null;

/** One layer. ok: true, false, or null (unknown, with `reason`). `next`: the command that fixes a false layer. */
export interface Layer {
  name: LayerName;
  ok: Tri;
  detail: string;
  reason?: string;
  next?: string;
  /** the evidence behind the verdict (shown with --detail) */
  evidence?: string[];
}

export const LAYERS = [
  "host-dependencies", "acceleration", "libvirtd", "network", "firewall", "image", "vm", "ip", "ssh", "cloud-init", "attachments", "drift",
] as const;
export type LayerName = (typeof LAYERS)[number];

export const LABELS: Record<LayerName, string> = {
  "host-dependencies": "host dependencies",
  acceleration: "acceleration",
  libvirtd: "libvirtd",
  network: "network",
  firewall: "firewall",
  image: "base image",
  vm: "vm",
  ip: "ip",
  ssh: "ssh",
  "cloud-init": "cloud-init",
  attachments: "attachments",
  drift: "config drift",
};

/** The document `aivm status --json` prints (documented in README.md, "## aivm status --json"). */
export interface StatusReport {
  /** the VM the report is about; null when the store records none (host-level part only) */
  vm: string | null;
  /** the VM is recorded in [[vms]] */
  recorded: boolean;
  config: string;
  /** every layer is true */
  ok: boolean;
  layers: Layer[];
  /** the commands to run, in order */
  next: string[];
}

// ---------- the live domain ----------

export interface LiveDisk { device: string; file?: string; target?: string; format?: string; readonly: boolean }
export interface LiveInterface { type: string; network?: string; bridge?: string; mac?: string }
export interface LiveFilesystem { driver?: string; source?: string; target?: string; readonly: boolean }
export interface LiveDomain {
  vcpus: number | null;
  maxVcpus: number | null;
  memoryKib: number | null;
  currentMemoryKib: number | null;
  disks: LiveDisk[];
  interfaces: LiveInterface[];
  filesystems: LiveFilesystem[];
}

const unescape = (s: string) => s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, "&");

function attr(el: string | undefined, name: string): string | undefined {
  if (!el) return undefined;
  const m = new RegExp(`\\s${name}=(?:'([^']*)'|"([^"]*)")`).exec(el);
  return m ? unescape(m[1] ?? m[2]!) : undefined;
}

const firstTag = (block: string, tag: string) => new RegExp(`<${tag}\\b[^>]*>`).exec(block)?.[0];

const KIB: Record<string, number> = { b: 1 / 1024, bytes: 1 / 1024, k: 1, kib: 1, kb: 1000 / 1024, m: 1024, mib: 1024, mb: 1e6 / 1024, g: 1024 ** 2, gib: 1024 ** 2, gb: 1e9 / 1024, t: 1024 ** 3, tib: 1024 ** 3 };

function memKib(xml: string, tag: string): number | null {
  const m = new RegExp(`<${tag}\\b([^>]*)>\\s*(\\d+)\\s*</${tag}>`).exec(xml);
  if (!m) return null;
  const unit = (attr(m[1], "unit") ?? "KiB").toLowerCase();
  return Math.round(Number(m[2]) * (KIB[unit] ?? 1));
}

/** The facts aivm compares from `virsh dumpxml`: vCPUs, memory, disks, interfaces, filesystems. */
export function parseDomainXml(xml: string): LiveDomain {
  const vcpu = /<vcpu\b([^>]*)>\s*(\d+)\s*<\/vcpu>/.exec(xml);
  const maxVcpus = vcpu ? Number(vcpu[2]) : null;
  const current = vcpu ? attr(vcpu[1], "current") : undefined;
  const blocks = (tag: string) => [...xml.matchAll(new RegExp(`<${tag}\\b[^>]*?(?:/>|>[\\s\\S]*?</${tag}>)`, "g"))].map((m) => m[0]);
  return {
    vcpus: current !== undefined ? Number(current) : maxVcpus,
    maxVcpus,
    memoryKib: memKib(xml, "memory"),
    currentMemoryKib: memKib(xml, "currentMemory"),
    disks: blocks("disk").map((b) => {
      const src = firstTag(b, "source");
      const format = attr(firstTag(b, "driver"), "type");
      return { device: attr(firstTag(b, "disk"), "device") ?? "disk", file: attr(src, "file") ?? attr(src, "dev"), target: attr(firstTag(b, "target"), "dev"), ...(format ? { format } : {}), readonly: /<readonly\s*\/>/.test(b) };
    }),
    interfaces: blocks("interface").map((b) => {
      const src = firstTag(b, "source");
      return { type: attr(firstTag(b, "interface"), "type") ?? "", network: attr(src, "network"), bridge: attr(src, "bridge"), mac: attr(firstTag(b, "mac"), "address")?.toLowerCase() };
    }),
    filesystems: blocks("filesystem").map((b) => ({
      driver: attr(firstTag(b, "driver"), "type"),
      source: attr(firstTag(b, "source"), "dir"),
      target: attr(firstTag(b, "target"), "dir"),
      readonly: /<readonly\s*\/>/.test(b),
    })),
  };
}

/** The VM's main disk: target vda, else the first writable disk device. */
export function mainDisk(d: LiveDomain): LiveDisk | undefined {
  const disks = d.disks.filter((x) => x.device === "disk");
  return disks.find((x) => x.target === "vda") ?? disks.find((x) => !x.readonly) ?? disks[0];
}

/** `virsh domblkinfo` -> capacity in bytes. */
export function parseBlkCapacity(text: string): number | null {
  const m = /^Capacity:\s*(\d+)/m.exec(text);
  return m ? Number(m[1]) : null;
}

export const GIB = 1024 ** 3;

// ---------- drift ----------

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

const mib = (kib: number) => Math.round(kib / 1024);
const gib = (b: number) => (Number.isInteger(b / GIB) ? String(b / GIB) : (b / GIB).toFixed(2));

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

// ---------- probes ----------

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

/** The guest-side check for one attachment, as one shell line printing `<index> <verdict> <words>`. */
export function attachmentProbe(i: number, a: Vm["attachments"][number]): string {
  const q = shellQuote(a.guest_dst);
  if (a.mode === "git") return `if [ -d ${q}/.git ]; then echo "${i} ok git"; else echo "${i} missing git"; fi`;
  // findmnt prints the mount at exactly that target (not a parent's), with its options
  return `o=$(findmnt -n -o OPTIONS --mountpoint ${q} 2>/dev/null | head -n1); if [ -z "$o" ]; then echo "${i} missing"; else echo "${i} mounted $o"; fi`;
}

/** Pure: the verdict lines of attachmentProbe -> problems, per attachment. */
export function attachmentVerdicts(attachments: Vm["attachments"], stdout: string): { ok: boolean; text: string }[] {
  const lines = new Map<number, string[]>();
  for (const l of stdout.split("\n")) {
    const w = l.trim().split(/\s+/);
    if (w.length >= 2 && /^\d+$/.test(w[0]!)) lines.set(Number(w[0]), w.slice(1));
  }
  return attachments.map((a, i) => {
    const w = lines.get(i);
    const where = `${a.host_path} -> ${a.guest_dst} (${a.mode}, ${a.access})`;
    if (!w) return { ok: false, text: `${where}: no answer from the guest probe` };
    if (a.mode === "git") return w[0] === "ok" ? { ok: true, text: `${where}: guest clone present` } : { ok: false, text: `${where}: no git clone at ${a.guest_dst}` };
    if (w[0] !== "mounted") return { ok: false, text: `${where}: not mounted` };
    const opts = (w[1] ?? "").split(",");
    const ro = opts.includes("ro");
    if (a.access === "ro" && !ro) return { ok: false, text: `${where}: mounted read-write, should be read-only` };
    if (a.access === "rw" && ro) return { ok: false, text: `${where}: mounted read-only, should be read-write` };
    return { ok: true, text: `${where}: mounted ${ro ? "ro" : "rw"}` };
  });
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

/** The fixes of the false layers, in layer order, without repeats; what to run first when nothing is set up. */
export function nextCommands(layers: Layer[], configPath: string, configExists: boolean): string[] {
  const c = isDefaultConfigPath(configPath) ? "" : ` --config ${shellQuote(configPath)}`;
  const one = (cmd: string) => (cmd.startsWith("aivm ") ? cmd.replace(/^aivm [a-z-]+(?: [a-z-]+)?/, (m) => `${m}${c}`) : cmd);
  const withConfig = (cmd: string) => (c ? cmd.split(" && ").map(one).join(" && ") : cmd);
  const next: string[] = [];
  if (!configExists) next.push(`aivm config init${c}`);
  for (const l of layers) {
    if (l.ok !== false || !l.next) continue;
    const cmd = withConfig(l.next);
    if (!next.includes(cmd)) next.push(cmd);
  }
  return next;
}

// ---------- text ----------

const VM_LAYERS = new Set<LayerName>(["ip", "ssh", "cloud-init", "attachments", "drift"]);

export function formatStatus(r: StatusReport, o: { detail?: boolean } = {}): string {
  const word = (ok: Tri) => (ok === true ? "true" : ok === false ? "false" : "unknown");
  const width = Math.max(...r.layers.map((l) => LABELS[l.name].length));
  const lines = [r.vm ? `VM ${r.vm}${r.recorded ? "" : " (not created yet)"}` : "no VM in the config store: host-level checks only"];
  for (const l of r.layers) {
    if (!r.vm && VM_LAYERS.has(l.name)) continue;
    const text = l.ok !== null || !l.reason ? l.detail : l.detail === "unknown" ? l.reason : `${l.detail} (${l.reason})`;
    lines.push(`${LABELS[l.name].padEnd(width)}  ${word(l.ok).padEnd(7)}  ${text}`);
    if (o.detail) for (const e of l.evidence ?? []) lines.push(`${"".padEnd(width)}           | ${e}`);
  }
  if (r.next.length) lines.push("", "next:", ...r.next.map((n) => `  ${n}`));
  else if (r.ok) lines.push("", "everything is up");
  else lines.push("", "nothing to run: the unknown layers say why they could not be checked");
  return lines.join("\n");
}
