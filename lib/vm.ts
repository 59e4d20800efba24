// The VM lifecycle on libvirt: the per-VM directory, create (overlay, host keys, seed, define), start/stop/delete,
// the guest's IP and the wait for IP -> SSH -> cloud-init. Planners are pure; apply functions take the Runner first.
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, realpathSync, statSync } from "node:fs";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import type { Vm } from "./config.ts";
import { chooseAccel, probeAccel, type AccelProbe } from "./accel.ts";
import { macAddress, renderDomainXml, type DomainSpec } from "./domain.ts";
import { renderMetaData, renderNetworkConfig, renderUserData, seedArgv, type HostKey } from "./cloud-init.ts";
import { knownHostsLine, sshArgv } from "./ssh-config.ts";
import { cachedImage, imageFiles, type CachedImage } from "./image.ts";
import { parseLeases } from "./net.ts";
import { AivmError, EXIT } from "./errors.ts";
import { log } from "./log.ts";
import type { Runner } from "./run.ts";
import { virshArgv, virshExec, virshRead } from "./virsh.ts";
import { exportRoot, guestIds, releaseVmMounts, restoreHostBinds, vmFilesystems } from "./share.ts";

// ---------- files ----------

export interface VmFiles {
  dir: string; disk: string; seed: string; seedDir: string; hostKey: string; hostKeyPub: string;
  knownHosts: string; consoleLog: string; nvram: string; ipCache: string; lock: string;
}

/** Everything aivm keeps for one VM lives under vm.dir. */
export function vmFiles(vm: Vm): VmFiles {
  const d = vm.dir;
  return {
    dir: d,
    disk: join(d, "disk.qcow2"),
    seed: join(d, "seed.img"),
    seedDir: join(d, "seed"),
    hostKey: join(d, "ssh_host_ed25519_key"),
    hostKeyPub: join(d, "ssh_host_ed25519_key.pub"),
    knownHosts: join(d, "known_hosts"),
    consoleLog: join(d, "console.log"),
    nvram: join(d, "nvram.fd"),
    ipCache: join(d, "ip"),
    lock: join(d, ".lock"),
  };
}

/** The files a created VM cannot do without (the console log, nvram and ip cache appear later). */
export function requiredFiles(f: VmFiles): string[] {
  return [f.disk, f.seed, f.hostKey, f.hostKeyPub, f.knownHosts];
}

/** Why vm.dir may not be created or removed: it must lie strictly inside vm_root (symlinks resolved). */
export function vmDirProblem(vm: Vm): string | undefined {
  const inside = (root: string, dir: string) => {
    const rel = relative(root, dir);
    return rel !== "" && !rel.startsWith("..") && !isAbsolute(rel);
  };
  const root = resolve(vm.paths.vmRoot);
  const dir = resolve(vm.dir);
  if (root === "/" || !inside(root, dir)) return `${vm.dir} is not strictly inside vm_root ${vm.paths.vmRoot}`;
  try {
    const realDir = realpathSync(dir);
    if (!inside(realpathSync(root), realDir)) return `${vm.dir} resolves to ${realDir}, outside vm_root ${vm.paths.vmRoot}`;
  } catch {}
  return undefined;
}

function checkVmDir(vm: Vm): void {
  const p = vmDirProblem(vm);
  if (p) throw new AivmError(`vm ${vm.name}`, `refusing to touch the VM directory: ${p}`, EXIT.FAILED);
}

// ---------- host facts (injectable for tests) ----------

export interface HostFacts {
  probe(): AccelProbe;
  exists(path: string): boolean;
  /** the first ancestor directory of path that others cannot traverse (libvirt-qemu must), or null */
  untraversable(path: string): string | null;
}

function firstUntraversable(path: string): string | null {
  let d = dirname(resolve(path));
  for (;;) {
    try {
      if ((statSync(d).mode & 0o001) === 0) return d;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") return null; // not there yet: its parents decide
    }
    if (d === "/") return null;
    d = dirname(d);
  }
}

export const realHost: HostFacts = { probe: () => probeAccel(), exists: existsSync, untraversable: firstUntraversable };

export const OVMF_CANDIDATES = [
  { loader: "/usr/share/OVMF/OVMF_CODE_4M.fd", varsTemplate: "/usr/share/OVMF/OVMF_VARS_4M.fd" },
  { loader: "/usr/share/OVMF/OVMF_CODE.fd", varsTemplate: "/usr/share/OVMF/OVMF_VARS.fd" },
];
export const VIRTIOFSD = "/usr/lib/qemu/virtiofsd";
export const DEFAULT_CMDLINE = "root=/dev/vda rw console=ttyS0";

// ---------- planners ----------

/** Pure: the domain for a VM. UEFI when OVMF exists and the image has no kernel; direct kernel boot when it has one. */
export function planDomain(
  vm: Vm,
  o: { type: "kvm" | "qemu"; image: CachedImage | null; uuid?: string; exists: (p: string) => boolean; filesystems?: DomainSpec["filesystems"] },
): DomainSpec {
  const f = vmFiles(vm);
  const kernel = o.image?.kernel && o.image.initrd ? { kernel: o.image.kernel, initrd: o.image.initrd, cmdline: o.image.cmdline ?? DEFAULT_CMDLINE } : undefined;
  const ovmf = kernel ? undefined : OVMF_CANDIDATES.find((c) => o.exists(c.loader) && o.exists(c.varsTemplate));
  return {
    vm,
    type: o.type,
    ...(o.uuid ? { uuid: o.uuid } : {}),
    disk: f.disk,
    diskFormat: "qcow2",
    seed: f.seed,
    consoleLog: f.consoleLog,
    ...(ovmf ? { firmware: { ...ovmf, nvram: f.nvram } } : {}),
    ...(kernel ? { kernel } : {}),
    filesystems: o.filesystems ?? vmFilesystems(vm),
    ...(o.exists(VIRTIOFSD) ? { virtiofsd: VIRTIOFSD } : {}),
  };
}

/** The overlay: a qcow2 whose backing file is the cached base image (no copy, so its cost does not grow with the base). */
export function overlayArgv(base: { path: string; format: string }, disk: string, diskGib: number): string[] {
  return ["qemu-img", "create", "-q", "-f", "qcow2", "-F", base.format, "-b", base.path, disk, `${diskGib}G`];
}

export function hostKeyArgv(vmName: string, keyPath: string): string[] {
  return ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", vmName, "-f", keyPath];
}

/** Changes with the host key, so a regenerated key makes cloud-init apply the new keys on an existing disk. */
export function instanceId(vmName: string, hostPublicKey: string): string {
  return `${vmName}-${createHash("sha256").update(hostPublicKey.trim()).digest("hex").slice(0, 12)}`;
}

/** The undefine flag sets to try, most thorough first; older libvirt rejects the newer flags. */
export const UNDEFINE_ATTEMPTS: string[][] = [
  ["--nvram", "--managed-save", "--snapshots-metadata", "--checkpoints-metadata"],
  ["--nvram", "--managed-save", "--snapshots-metadata"],
  ["--nvram", "--managed-save"],
  ["--nvram"],
  [],
];

// ---------- libvirt reads ----------

const NO_DOMAIN = /failed to get domain|domain not found|no domain with matching/i;

export type DomainState = "running" | "paused" | "shut off" | "crashed" | "pmsuspended" | "in shutdown" | "absent" | (string & {});

export async function domainState(runner: Runner, uri: string, name: string): Promise<DomainState> {
  const r = await virshRead(runner, uri, ["domstate", name]);
  if (r.exitCode === 0) return r.stdout.trim().split("\n")[0]!.trim();
  if (NO_DOMAIN.test(r.stderr)) return "absent";
  throw new AivmError(`virsh domstate ${name}`, lastLine(r.stderr) || `exited ${r.exitCode}`);
}

/** The domain's UUID, or null when libvirt has no such domain. */
export async function domainUuid(runner: Runner, uri: string, name: string): Promise<string | null> {
  const r = await virshRead(runner, uri, ["domuuid", name]);
  if (r.exitCode === 0 && r.stdout.trim()) return r.stdout.trim();
  if (r.exitCode === 0 || NO_DOMAIN.test(r.stderr)) return null;
  throw new AivmError(`virsh domuuid ${name}`, lastLine(r.stderr) || `exited ${r.exitCode}`);
}

function lastLine(s: string): string {
  const l = s.trim().split("\n").filter((x) => x.trim());
  return (l[l.length - 1] ?? "").trim().replace(/^error:\s*/, "");
}

// ---------- create ----------

function readKey(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null;
  }
}

/** Shown instead of a host key that `vm create` has not generated yet (dry run, previews). */
export const PLACEHOLDER_HOST_KEY: HostKey = {
  privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nPLACEHOLDER/generated/by/aivm/vm/create\n-----END OPENSSH PRIVATE KEY-----\n",
  publicKey: "ssh-ed25519 PLACEHOLDER/generated/by/aivm/vm/create placeholder",
};

/** The cloud-init documents for a VM, from its host key. */
export function seedDocuments(vm: Vm, o: { authorizedKey: string; hostKey: HostKey; uid?: number; gid?: number }): { "user-data": string; "meta-data": string; "network-config": string } {
  return {
    // uid/gid: the guest user owns files as the host user does (lib/share.ts guestIds), so shared folders stay theirs
    "user-data": renderUserData(vm, { authorizedKey: o.authorizedKey.trim(), hostKey: o.hostKey, uid: o.uid, gid: o.gid }),
    "meta-data": renderMetaData(vm, instanceId(vm.name, o.hostKey.publicKey)),
    "network-config": renderNetworkConfig(vm),
  };
}

function isFreshDir(host: HostFacts, f: VmFiles): boolean {
  if (!host.exists(f.dir)) return true;
  try {
    return readdirSync(f.dir).every((e) => e === ".lock");
  } catch {
    return false;
  }
}

/**
 * Create the VM: directory, overlay disk, host keys, known_hosts, seed, domain definition. An existing domain with an
 * intact directory is left alone. A stale half (domain without directory, or directory without domain) is rebuilt:
 * missing files are recreated and the domain is (re)defined with its existing UUID. On failure everything this call
 * created is removed again.
 */
export async function ensureVm(runner: Runner, vm: Vm, host: HostFacts = realHost): Promise<"created" | "unchanged"> {
  checkVmDir(vm);
  const f = vmFiles(vm);
  const uri = vm.paths.libvirtUri;
  const uuid = await domainUuid(runner, uri, vm.name);
  if (vm.imported) {
    // aivm did not create this domain's disk, seed or host key: never rebuild or redefine it
    if (uuid) return "unchanged";
    throw new AivmError(`vm create ${vm.name}`, "it was imported by `aivm config discover` and its libvirt domain is gone; aivm cannot recreate a VM it did not create", EXIT.FAILED, "remove its [[vms]] record, or define the domain again yourself");
  }
  const missing = requiredFiles(f).filter((p) => !host.exists(p));
  if (uuid && missing.length === 0) return "unchanged";

  // Preconditions first: nothing is created when one fails.
  const authorizedKey = readKey(vm.paths.sshPubkey);
  if (authorizedKey === null && !runner.dryRun) {
    throw new AivmError(`vm create ${vm.name}`, `no SSH public key at ${vm.paths.sshPubkey}`, EXIT.FAILED, `create one with \`ssh-keygen -t ed25519 -N "" -f ${vm.paths.sshIdentity}\` or set [defaults.paths] ssh_identity`);
  }
  let image = cachedImage(vm.paths, vm.image.sha256);
  if (!image) {
    if (!runner.dryRun) throw new AivmError(`vm create ${vm.name}`, `image not cached: run aivm image fetch (sha256 ${vm.image.sha256.slice(0, 12)}...)`, EXIT.FAILED);
    image = { sha256: vm.image.sha256, path: imageFiles(vm.paths.imageCache, vm.image.sha256).img, format: "qcow2" };
    log.info(`dry run: image ${vm.image.sha256.slice(0, 12)} is not cached yet; assuming ${image.path} (qcow2)`);
  }
  const type = chooseAccel(vm.accel, host.probe());
  if (uuid) log.warn(`domain ${vm.name} exists but its directory is incomplete (missing ${missing.map((p) => relative(f.dir, p)).join(", ")}): rebuilding and redefining it`);
  else if (!isFreshDir(host, f)) log.warn(`${f.dir} exists but libvirt has no domain ${vm.name}: reusing the files there and defining it`);
  if (uri === "qemu:///system") {
    const seen = new Set<string>();
    for (const p of [f.disk, image.path]) {
      const blocked = host.untraversable(p);
      if (blocked && !seen.has(blocked)) {
        seen.add(blocked);
        log.warn(`${blocked} is not searchable by other users: libvirt's qemu user may not reach ${p} (chmod o+x ${blocked})`);
      }
    }
  }

  const freshDir = isFreshDir(host, f);
  const created: string[] = [];
  try {
    await runner.exec(["install", "-d", "-m", "0755", f.dir], { what: `create ${f.dir}` });
    // the export root of the aivm-root virtiofs device (lib/share.ts): it must exist before the domain starts
    if (!host.exists(exportRoot(vm))) await runner.exec(["install", "-d", "-m", "0755", exportRoot(vm)], { what: `create ${exportRoot(vm)}` });
    if (!host.exists(f.disk)) {
      created.push(f.disk);
      await runner.exec(overlayArgv(image, f.disk, vm.diskGib), { what: "create the overlay disk" });
    }
    // host key: generate when the private key is missing; recover a lost public half from the private key
    if (!host.exists(f.hostKey)) {
      created.push(f.hostKey, f.hostKeyPub);
      if (host.exists(f.hostKeyPub)) await runner.remove(f.hostKeyPub);
      await runner.exec(hostKeyArgv(vm.name, f.hostKey), { what: "generate the guest's SSH host key" });
    } else if (!host.exists(f.hostKeyPub)) {
      const r = await runner.read(["ssh-keygen", "-y", "-f", f.hostKey], { what: "read the guest's SSH host key" });
      created.push(f.hostKeyPub);
      await runner.writeFile(f.hostKeyPub, r.stdout.trim() + ` ${vm.name}\n`, 0o644);
    }
    const privateKey = readKey(f.hostKey);
    const publicKey = readKey(f.hostKeyPub);
    const hostKey: HostKey = privateKey && publicKey ? { privateKey, publicKey: publicKey.trim() } : PLACEHOLDER_HOST_KEY;
    if (hostKey === PLACEHOLDER_HOST_KEY && !runner.dryRun) throw new AivmError(`vm create ${vm.name}`, `ssh-keygen did not produce ${f.hostKey}`);

    if (!host.exists(f.knownHosts)) created.push(f.knownHosts);
    await runner.writeFile(f.knownHosts, ensureNl(knownHostsLine(vm, hostKey.publicKey)), 0o644);

    if (!host.exists(f.seedDir)) created.push(f.seedDir);
    if (!host.exists(f.seed)) created.push(f.seed);
    const docs = seedDocuments(vm, { authorizedKey: authorizedKey ?? "ssh-ed25519 PLACEHOLDER-your-key", hostKey, ...guestIds(vm) });
    for (const [name, text] of Object.entries(docs)) await runner.writeFile(join(f.seedDir, name), text, 0o600);
    await runner.exec(seedArgv(f.seedDir, f.seed), { what: "build the cloud-init seed" });
    // the disk and the seed (which carries the private host key) are for root and libvirt's qemu user only
    await runner.exec(["chmod", "0600", f.disk, f.seed], { what: "restrict the VM's disk and seed" });

    const xml = renderDomainXml(planDomain(vm, { type, image, uuid: uuid ?? undefined, exists: host.exists }));
    await runner.step({
      title: uuid ? `Redefine VM ${vm.name}` : `Define VM ${vm.name}`,
      why: uuid ? `libvirt domain ${vm.name} (UUID ${uuid}) lost its files; redefine it over the rebuilt ones` : `libvirt domain for ${vm.name} (${vm.cpus} CPUs, ${vm.memoryMib} MiB, ${type === "kvm" ? "KVM" : "TCG"})`,
      consent: true,
      actions: [{ kind: "run", argv: virshArgv(uri, "define", "/dev/stdin"), input: xml }],
    });
  } catch (e) {
    if (!runner.dryRun) await rollbackCreate(runner, vm, { hadDomain: !!uuid, freshDir, created });
    throw e;
  }
  return "created";
}

function ensureNl(s: string): string {
  return s.endsWith("\n") ? s : s + "\n";
}

async function rollbackCreate(runner: Runner, vm: Vm, o: { hadDomain: boolean; freshDir: boolean; created: string[] }): Promise<void> {
  const f = vmFiles(vm);
  try {
    if (!o.hadDomain && (await domainUuid(runner, vm.paths.libvirtUri, vm.name))) {
      await virshRead(runner, vm.paths.libvirtUri, ["undefine", vm.name, "--nvram"]);
    }
  } catch {}
  try {
    if (o.freshDir) await runner.remove(f.dir);
    else for (const p of o.created.reverse()) await runner.remove(p);
  } catch (e) {
    log.warn(`could not clean up after the failed create: ${(e as Error).message}`);
  }
}

// ---------- start / stop / delete ----------

export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}
export const realClock: Clock = { now: () => Date.now(), sleep: (ms) => Bun.sleep(ms) };

const RUNNING = new Set(["running", "idle", "blocked", "no state"]);

export async function startVm(runner: Runner, vm: Vm, o: { clock?: Clock } = {}): Promise<"started" | "resumed" | "unchanged"> {
  const clock = o.clock ?? realClock;
  const uri = vm.paths.libvirtUri;
  let state = await domainState(runner, uri, vm.name);
  if (state === "in shutdown") {
    log.info(`${vm.name} is shutting down; waiting for it to stop before starting it again`);
    for (let i = 0; i < 30 && state === "in shutdown"; i++) {
      await clock.sleep(1000);
      state = await domainState(runner, uri, vm.name);
    }
    if (state === "in shutdown") throw new AivmError(`vm up ${vm.name}`, "still shutting down after 30 s", EXIT.FAILED, "try again, or `aivm vm down` to force it off");
  }
  switch (state) {
    case "absent":
      throw new AivmError(`vm up ${vm.name}`, "not created: run aivm vm create", EXIT.FAILED);
    case "paused":
      await virshExec(runner, uri, ["resume", vm.name]);
      return "resumed";
    case "pmsuspended":
      await virshExec(runner, uri, ["dompmwakeup", vm.name]);
      return "resumed";
    case "crashed":
      await restoreHostBinds(runner, vm);
      // on_crash=preserve keeps a crashed domain active: clear it before starting afresh
      await virshExec(runner, uri, ["destroy", vm.name], { nothrow: true });
      await virshExec(runner, uri, ["start", vm.name]);
      return "started";
    case "shut off":
      // host binds of saved folders (gone after a host reboot) must be in place before virtiofsd starts
      await restoreHostBinds(runner, vm);
      await virshExec(runner, uri, ["start", vm.name], { what: `start ${vm.name}` }).catch((e) => {
        if (e instanceof AivmError && /network .* is not active/i.test(e.why)) {
          throw new AivmError(e.what, e.why, e.exitCode, `aivm net create ${vm.network.name}`);
        }
        throw e;
      });
      return "started";
    default:
      if (RUNNING.has(state)) return "unchanged";
      throw new AivmError(`vm up ${vm.name}`, `cannot start from state "${state}"`);
  }
}

/** ACPI shutdown, polled each second; forced off (`destroy`) only after vm.shutdownTimeoutS, saying so. */
export async function stopVm(runner: Runner, vm: Vm, o: { clock?: Clock; timeoutS?: number } = {}): Promise<"stopped" | "forced" | "unchanged"> {
  const clock = o.clock ?? realClock;
  const uri = vm.paths.libvirtUri;
  const timeoutS = o.timeoutS ?? vm.shutdownTimeoutS;
  const state = await domainState(runner, uri, vm.name);
  if (state === "absent") {
    log.info(`${vm.name} is not created; nothing to stop`);
    return "unchanged";
  }
  if (state === "shut off" || state === "crashed") return "unchanged";
  if (state === "paused") await virshExec(runner, uri, ["resume", vm.name]);
  if (state === "pmsuspended") await virshExec(runner, uri, ["dompmwakeup", vm.name]);
  await virshExec(runner, uri, ["shutdown", vm.name, "--mode", "acpi"]);
  if (runner.dryRun) return "stopped";
  const t0 = clock.now();
  let lastNote = t0;
  let lastPress = t0;
  for (;;) {
    await clock.sleep(1000);
    const s = await domainState(runner, uri, vm.name);
    if (s === "shut off" || s === "absent") return "stopped";
    const now = clock.now();
    if (now - t0 >= timeoutS * 1000) break;
    if (now - lastNote >= 5000) {
      lastNote = now;
      log.info(`waiting for ${vm.name} to shut down (${Math.round((now - t0) / 1000)}s of ${timeoutS}s)`);
    }
    // a guest still booting may miss the first ACPI event: press the button again every 10 s
    if (s === "running" && now - lastPress >= 10_000) {
      lastPress = now;
      await virshExec(runner, uri, ["shutdown", vm.name, "--mode", "acpi"], { nothrow: true });
    }
  }
  log.warn(`${vm.name} did not shut down within ${timeoutS}s after the ACPI request: forcing it off (virsh destroy)`);
  await virshExec(runner, uri, ["destroy", vm.name]);
  return "forced";
}

const FLAG_REJECTED = /unsupported flag|not supported|doesn't support option|unknown option|does not support|no such option/i;

/** Force off, undefine (with the flag fallbacks older libvirt needs), remove vm.dir and nothing outside it. */
export async function deleteVm(runner: Runner, vm: Vm): Promise<"deleted" | "absent"> {
  checkVmDir(vm);
  const uri = vm.paths.libvirtUri;
  const f = vmFiles(vm);
  const state = await domainState(runner, uri, vm.name);
  const hasDir = existsSync(f.dir);
  // a directory holding only the lock file (taken by this very command) is no VM
  if (state === "absent" && (!hasDir || isFreshDir(realHost, f))) {
    log.info(`${vm.name} does not exist; nothing to delete`);
    return "absent";
  }
  if (!runner.dryRun && !(await runner.confirm(`vm delete ${vm.name}`, `Delete VM ${vm.name}: force it off, undefine it and remove ${f.dir}?`))) {
    throw new AivmError(`vm delete ${vm.name}`, "not approved");
  }
  if (state !== "absent") {
    if (state !== "shut off") await virshExec(runner, uri, ["destroy", vm.name], { nothrow: true });
    let done = false;
    // an imported VM's nvram lives outside vm.dir and is not aivm's to remove
    const attempts = vm.imported ? UNDEFINE_ATTEMPTS.map((a) => a.filter((f) => f !== "--nvram")).filter((a, i, all) => all.findIndex((b) => b.join() === a.join()) === i) : UNDEFINE_ATTEMPTS;
    for (const flags of attempts) {
      const r = await virshExec(runner, uri, ["undefine", vm.name, ...flags], { nothrow: true });
      if (r.exitCode === 0) { done = true; break; }
      if (NO_DOMAIN.test(r.stderr)) { done = true; break; }
      if (!FLAG_REJECTED.test(r.stderr)) throw new AivmError(`virsh undefine ${vm.name}`, lastLine(r.stderr) || `exited ${r.exitCode}`);
      log.debug(`virsh undefine ${flags.join(" ")} rejected: ${lastLine(r.stderr)}; retrying with fewer flags`);
    }
    if (!done) throw new AivmError(`virsh undefine ${vm.name}`, "every flag combination was rejected");
  }
  // the export root holds bind mounts of host folders: unmount them before anything under vm.dir is removed
  if (hasDir) await releaseVmMounts(runner, vm);
  if (hasDir) await runner.remove(f.dir);
  return "deleted";
}

// ---------- IP ----------

/** Parse `virsh domifaddr` rows for one MAC: the IPv4 address without its prefix. */
export function parseDomifaddr(text: string, mac: string): string | null {
  for (const line of text.split("\n")) {
    const m = /\s([0-9a-fA-F:]{17})\s+ipv4\s+(\d+\.\d+\.\d+\.\d+)(?:\/\d+)?/.exec(line);
    if (m && m[1]!.toLowerCase() === mac.toLowerCase()) return m[2]!;
  }
  return null;
}

/** The newest lease for a MAC, from `virsh net-dhcp-leases` output. */
export function leaseIp(text: string, mac: string): string | null {
  const leases = parseLeases(text).filter((l) => l.mac === mac.toLowerCase() && l.protocol === "ipv4");
  leases.sort((a, b) => (a.expiry < b.expiry ? 1 : a.expiry > b.expiry ? -1 : 0));
  return leases[0]?.ip.replace(/\/\d+$/, "") ?? null;
}

/** The IP last seen for this VM, or null. */
export function cachedIp(vm: Vm): string | null {
  const t = readKey(vmFiles(vm).ipCache)?.trim();
  return t && /^\d+\.\d+\.\d+\.\d+$/.test(t) ? t : null;
}

/** The VM's IPv4: its DHCP lease (by MAC), else libvirt's domifaddr. Cached in <dir>/ip. */
export async function vmIp(runner: Runner, vm: Vm): Promise<string | null> {
  const uri = vm.paths.libvirtUri;
  const mac = macAddress(vm.name);
  let ip: string | null = null;
  const leases = await virshRead(runner, uri, ["net-dhcp-leases", vm.network.name, "--mac", mac]);
  if (leases.exitCode === 0) ip = leaseIp(leases.stdout, mac);
  if (!ip) {
    const r = await virshRead(runner, uri, ["domifaddr", vm.name, "--source", "lease"]);
    if (r.exitCode === 0) ip = parseDomifaddr(r.stdout, mac);
  }
  if (ip && !runner.dryRun && cachedIp(vm) !== ip && existsSync(vm.dir)) {
    try {
      await runner.writeFile(vmFiles(vm).ipCache, ip + "\n", 0o644);
    } catch {}
  }
  return ip;
}

// ---------- wait ----------

export const WAIT_STAGES = {
  ip: "an IP address (DHCP lease)",
  ssh: "SSH (pinned host key)",
  cloudInit: "cloud-init to finish",
} as const;

/** IP -> SSH -> cloud-init finished, with progress on stderr every ~5 s and a timeout naming the stuck stage. */
export async function waitVm(runner: Runner, vm: Vm, o: { timeoutS?: number; clock?: Clock; until?: "ip" | "ssh" | "cloud-init" } = {}): Promise<{ ip: string }> {
  const clock = o.clock ?? realClock;
  const uri = vm.paths.libvirtUri;
  const timeoutS = o.timeoutS ?? vm.waitTimeoutS;
  const t0 = clock.now();
  const deadline = t0 + timeoutS * 1000;
  let stage: string = WAIT_STAGES.ip;
  let last = "";
  let lastNote = t0;
  const secs = () => Math.round((clock.now() - t0) / 1000);
  const timedOut = () =>
    new AivmError(`vm wait ${vm.name}`, `timed out after ${timeoutS}s waiting for ${stage}${last ? ` (last: ${last})` : ""}`, EXIT.FAILED, `see what the guest printed: aivm vm console-log --vm ${vm.name}`);
  const checkRunning = async () => {
    const s = await domainState(runner, uri, vm.name);
    if (s === "absent") throw new AivmError(`vm wait ${vm.name}`, "not created: run aivm vm create");
    if (!RUNNING.has(s) && s !== "in shutdown") throw new AivmError(`vm wait ${vm.name}`, `the VM is ${s}, not running`, EXIT.FAILED, "start it with `aivm vm up`");
  };
  /** true every ~5 s: print progress, and tell the caller to run its slower checks */
  const tick = (): boolean => {
    const now = clock.now();
    if (now - lastNote < 5000) return false;
    lastNote = now;
    log.info(`${vm.name}: waiting for ${stage} (${secs()}s)`);
    return true;
  };

  await checkRunning();
  let ip: string | null = null;
  for (;;) {
    ip = await vmIp(runner, vm);
    if (ip) break;
    if (clock.now() >= deadline) throw timedOut();
    if (tick()) await checkRunning();
    await clock.sleep(500);
  }
  log.debug(`${vm.name}: IP ${ip} after ${secs()}s`);
  if (o.until === "ip") return { ip };

  stage = WAIT_STAGES.ssh;
  for (;;) {
    const r = await runner.read(sshArgv(vm, ip, { batch: true, connectTimeoutS: 5, command: ["true"] }), { nothrow: true, timeoutMs: 15_000 });
    if (r.exitCode === 0) break;
    last = lastLine(r.stderr) || `ssh exited ${r.exitCode}`;
    if (clock.now() >= deadline) throw timedOut();
    if (tick()) {
      await checkRunning();
      ip = (await vmIp(runner, vm)) ?? ip; // a renewed lease may have moved it
    }
    await clock.sleep(500);
  }
  log.debug(`${vm.name}: SSH up after ${secs()}s`);
  if (o.until === "ssh") return { ip };

  stage = WAIT_STAGES.cloudInit;
  last = "";
  let poll = false; // no cloud-init CLI in the guest: poll for boot-finished instead
  for (;;) {
    const remainingMs = Math.max(1000, deadline - clock.now());
    const command = poll ? ["test", "-f", "/var/lib/cloud/instance/boot-finished"] : ["cloud-init", "status", "--wait"];
    const note = poll ? undefined : setInterval(() => log.info(`${vm.name}: waiting for ${stage} (${secs()}s)`), 5000);
    let r;
    try {
      r = await runner.read(sshArgv(vm, ip, { batch: true, connectTimeoutS: 5, command }), { nothrow: true, timeoutMs: remainingMs });
    } finally {
      if (note) clearInterval(note);
    }
    if (r.exitCode === 0) break;
    if (!poll && r.exitCode === 2) {
      log.warn(`cloud-init finished with recoverable errors in ${vm.name}; see \`aivm vm ssh -- cloud-init status --long\``);
      break;
    }
    if (!poll && r.exitCode === 1) {
      log.warn(`cloud-init reported an error in ${vm.name}: ${lastLine(r.stdout) || lastLine(r.stderr)}; see \`aivm vm ssh -- cloud-init status --long\``);
      break;
    }
    if (!poll && r.exitCode === 127) poll = true;
    else last = lastLine(r.stderr) || (poll ? "boot-finished not there yet" : `exited ${r.exitCode}`);
    if (clock.now() >= deadline) throw timedOut();
    tick();
    await clock.sleep(poll ? 1000 : 500);
  }
  log.debug(`${vm.name}: cloud-init finished after ${secs()}s`);
  return { ip };
}

// ---------- status ----------

export interface VmStatus {
  name: string;
  state: DomainState;
  network: string;
  ip: string | null;
}

export async function vmStatus(runner: Runner, vm: Vm): Promise<VmStatus> {
  const state = await domainState(runner, vm.paths.libvirtUri, vm.name);
  const ip = RUNNING.has(state) ? await vmIp(runner, vm) : null;
  return { name: vm.name, state, network: vm.network.name, ip };
}
