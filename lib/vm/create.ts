// Create a VM: plan its domain, overlay disk, pinned host key and NoCloud seed, define it (with rollback).
import { basename, dirname, join, relative, resolve } from "node:path";
import { chooseAccel, probeAccel } from "../accel.ts";
import type { Vm } from "../config/model.ts";
import { cachedImage, CachedImage, imageFiles } from "../image.ts";
import { renderDomainXml, DomainSpec } from "../domain.ts";
import { checkVmDir, isFreshDir, readKey, requiredFiles, vmFiles } from "./files.ts";
import { exportRoot, vmFilesystems } from "../share/names.ts";
import { renderUserData, HostKey, renderMetaData, renderNetworkConfig, seedArgv } from "../cloud-init.ts";
import type { Host } from "../host.ts";
import type { Runner } from "../run.ts";
import { domainUuid, virshArgv, virshRead } from "../libvirt/virsh.ts";
import { AivmError, EXIT } from "../errors.ts";
import { knownHostsLine } from "../ssh-config.ts";
import { guestIds } from "../share/guest.ts";
import { log } from "../log.ts";
import { sha256hex } from "../digest.ts";
import { refuseForeign } from "../fsutil.ts";
import { heredocWith, shellQuote } from "../shell.ts";

/** The first ancestor directory of path that others cannot traverse (libvirt's qemu user must), or null. */
export function firstUntraversable(host: Host, path: string): string | null {
  let d = dirname(resolve(path));
  for (;;) {
    const st = host.stat(d);
    if (st && (st.mode & 0o001) === 0) return d;
    if (d === "/") return null;
    d = dirname(d);
  }
}

export const OVMF_CANDIDATES = [
  { loader: "/usr/share/OVMF/OVMF_CODE_4M.fd", varsTemplate: "/usr/share/OVMF/OVMF_VARS_4M.fd" },
  { loader: "/usr/share/OVMF/OVMF_CODE.fd", varsTemplate: "/usr/share/OVMF/OVMF_VARS.fd" },
];

export const VIRTIOFSD = "/usr/lib/qemu/virtiofsd";

export const DEFAULT_CMDLINE = "root=/dev/vda rw console=ttyS0";

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
  return `${vmName}-${sha256hex(hostPublicKey.trim()).slice(0, 12)}`;
}

/** Shown instead of a host key that `vm create` has not generated yet (dry run, previews). */
export const PLACEHOLDER_HOST_KEY: HostKey = {
  privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nPLACEHOLDER/generated/by/aivm/vm/create\n-----END OPENSSH PRIVATE KEY-----\n",
  publicKey: "ssh-ed25519 PLACEHOLDER/generated/by/aivm/vm/create placeholder",
};

/**
 * The shell text that writes known_hosts and the seed documents when the guest's host key only exists once an
 * earlier printed `ssh-keygen` has run (--dry-run, `aivm help raw`): the key files are read at that point, so the
 * text does what the real run does. `docs` were rendered with PLACEHOLDER_HOST_KEY; the login key is read from its
 * file too when `authorizedKeyMark` was rendered in its place.
 */
export function seedScript(vm: Vm, docs: Record<string, string>, o: { keyDir: string; seedDir: string; authorizedKeyMark?: string }): string[] {
  const f = vmFiles(vm);
  const key = join(o.keyDir, basename(f.hostKey));
  const pub = shellQuote(`${key}.pub`);
  const marks: Record<string, string> = {
    [JSON.stringify(PLACEHOLDER_HOST_KEY.privateKey)]: `"$(awk '{printf "%s\\\\n", $0}' ${shellQuote(key)})"`,
    [PLACEHOLDER_HOST_KEY.publicKey]: `$(cat ${pub})`,
    [`-${instanceId(vm.name, PLACEHOLDER_HOST_KEY.publicKey).slice(vm.name.length + 1)}\n`]: `-$(printf %s "$(cat ${pub})" | sha256sum | cut -c1-12)\n`,
    ...(o.authorizedKeyMark ? { [o.authorizedKeyMark]: `$(cat ${shellQuote(vm.paths.sshPubkey)})` } : {}),
  };
  const write = (path: string, mode: string, body: string) => [`install -m ${mode} /dev/null ${shellQuote(path)}`, `cat > ${shellQuote(path)} ${body}`];
  return [
    `install -m 644 /dev/null ${shellQuote(f.knownHosts)}`,
    `printf '%s %s\\n' ${shellQuote(vm.name)} "$(cut -d' ' -f1,2 ${pub})" > ${shellQuote(f.knownHosts)}`,
    ...Object.entries(docs).flatMap(([name, text]) => write(join(o.seedDir, name), "600", heredocWith(text, marks))),
  ];
}

/** The cloud-init documents for a VM, from its host key. */
export function seedDocuments(vm: Vm, o: { authorizedKey: string; hostKey: HostKey; uid?: number; gid?: number }): { "user-data": string; "meta-data": string; "network-config": string } {
  return {
    // uid/gid: the guest user owns files as the host user does (share/guest.ts guestIds), so shared folders stay theirs
    "user-data": renderUserData(vm, { authorizedKey: o.authorizedKey.trim(), hostKey: o.hostKey, uid: o.uid, gid: o.gid }),
    "meta-data": renderMetaData(vm, instanceId(vm.name, o.hostKey.publicKey)),
    "network-config": renderNetworkConfig(vm),
  };
}

/**
 * Create the VM: directory, overlay disk, host keys, known_hosts, seed, domain definition. An existing domain with an
 * intact directory is left alone. A stale half (domain without directory, or directory without domain) is rebuilt:
 * missing files are recreated and the domain is (re)defined with its existing UUID. On failure everything this call
 * created is removed again.
 */
export async function ensureVm(runner: Runner, vm: Vm, known: { uuid?: string | null } = {}): Promise<"created" | "unchanged"> {
  const host = runner.host;
  checkVmDir(vm);
  const f = vmFiles(vm);
  const uri = vm.paths.libvirtUri;
  const uuid = known.uuid !== undefined ? known.uuid : await domainUuid(runner, uri, vm.name);
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
  const type = chooseAccel(vm.accel, probeAccel(host));
  if (uuid) log.warn(`domain ${vm.name} exists but its directory is incomplete (missing ${missing.map((p) => relative(f.dir, p)).join(", ")}): rebuilding and redefining it`);
  else if (!isFreshDir(host, f)) log.warn(`${f.dir} exists but libvirt has no domain ${vm.name}: reusing the files there and defining it`);
  if (uri === "qemu:///system") {
    const seen = new Set<string>();
    for (const p of [f.disk, image.path]) {
      const blocked = firstUntraversable(host, p);
      if (blocked && !seen.has(blocked)) {
        seen.add(blocked);
        log.warn(`${blocked} is not searchable by other users: libvirt's qemu user may not reach ${p} (chmod o+x ${blocked})`);
      }
    }
  }

  // a symlink or a non-regular file where aivm makes its own file was planted by something else: refuse, write nothing
  for (const p of [f.disk, f.seed, f.hostKey, f.hostKeyPub, f.knownHosts]) refuseForeign(p);
  const freshDir = isFreshDir(host, f);
  const created: string[] = [];
  // every file is made in a private work directory (created exclusively: a planted name makes mkdir fail) and renamed
  // into place, so no tool ever writes through a path something else could have put there
  const work = join(f.dir, `.create-${process.pid}`);
  try {
    await runner.exec(["install", "-d", "-m", "0755", f.dir], { what: `create ${f.dir}` });
    // the export root of the aivm-root virtiofs device (share/names.ts): it must exist before the domain starts
    if (!host.exists(exportRoot(vm))) await runner.exec(["install", "-d", "-m", "0755", exportRoot(vm)], { what: `create ${exportRoot(vm)}` });
    await runner.exec(["mkdir", "-m", "0700", work], { what: `create ${work}` });
    const moves: [string, string][] = [];
    if (!host.exists(f.disk)) {
      created.push(f.disk);
      await runner.exec(overlayArgv(image, join(work, "disk.qcow2"), vm.diskGib), { what: "create the overlay disk" });
      moves.push([join(work, "disk.qcow2"), f.disk]);
    }
    // host key: generate when the private key is missing; recover a lost public half from the private key
    let privateKey = readKey(f.hostKey);
    let publicKey = readKey(f.hostKeyPub);
    if (!host.exists(f.hostKey)) {
      created.push(f.hostKey, f.hostKeyPub);
      await runner.exec(hostKeyArgv(vm.name, join(work, "ssh_host_ed25519_key")), { what: "generate the guest's SSH host key" });
      privateKey = readKey(join(work, "ssh_host_ed25519_key"));
      publicKey = readKey(join(work, "ssh_host_ed25519_key.pub"));
      moves.push([join(work, "ssh_host_ed25519_key"), f.hostKey], [join(work, "ssh_host_ed25519_key.pub"), f.hostKeyPub]);
    } else if (!host.exists(f.hostKeyPub)) {
      const r = await runner.read(["ssh-keygen", "-y", "-f", f.hostKey], { what: "read the guest's SSH host key" });
      created.push(f.hostKeyPub);
      publicKey = r.stdout.trim() + ` ${vm.name}\n`;
      await runner.writeFile(f.hostKeyPub, publicKey, 0o644);
    }
    const hostKey: HostKey = privateKey && publicKey ? { privateKey, publicKey: publicKey.trim() } : PLACEHOLDER_HOST_KEY;
    if (hostKey === PLACEHOLDER_HOST_KEY && !runner.dryRun) throw new AivmError(`vm create ${vm.name}`, `ssh-keygen did not produce ${f.hostKey}`);

    if (!host.exists(f.knownHosts)) created.push(f.knownHosts);
    if (!host.exists(f.seed)) created.push(f.seed);
    const ids = guestIds(vm, host);
    if (runner.dryRun && hostKey === PLACEHOLDER_HOST_KEY) {
      // the key is made by the printed ssh-keygen (in the work directory): the printed writes read it from there
      const mark = "ssh-ed25519 AIVMAUTHORIZEDKEYMARK";
      if (authorizedKey === null) log.warn(`no SSH public key at ${vm.paths.sshPubkey}: the printed seed reads it from there (the real run stops here)`);
      const docs = seedDocuments(vm, { authorizedKey: authorizedKey ?? mark, hostKey, ...ids });
      for (const line of seedScript(vm, docs, { keyDir: work, seedDir: work, authorizedKeyMark: authorizedKey === null ? mark : undefined })) runner.print(line);
    } else {
      await runner.writeFile(f.knownHosts, ensureNl(knownHostsLine(vm, hostKey.publicKey)), 0o644);
      const docs = seedDocuments(vm, { authorizedKey: authorizedKey ?? "ssh-ed25519 PLACEHOLDER-your-key", hostKey, ...ids });
      for (const [name, text] of Object.entries(docs)) await runner.writeFile(join(work, name), text, 0o600);
    }
    await runner.exec(seedArgv(work, join(work, "seed.img")), { what: "build the cloud-init seed" });
    moves.push([join(work, "seed.img"), f.seed]);
    // the disk and the seed (which carries the private host key) are for root and libvirt's qemu user only
    const restrict = moves.map(([from]) => from).filter((p) => p.endsWith("disk.qcow2") || p.endsWith("seed.img"));
    if (restrict.length) await runner.exec(["chmod", "0600", ...restrict], { what: "restrict the VM's disk and seed" });
    for (const [from, to] of moves) await runner.exec(["mv", "-T", from, to], { what: `place ${to}` });
    await runner.remove(work);

    const xml = renderDomainXml(planDomain(vm, { type, image, uuid: uuid ?? undefined, exists: (p) => host.exists(p) }));
    await runner.step({
      title: uuid ? `Redefine VM ${vm.name}` : `Define VM ${vm.name}`,
      why: uuid ? `libvirt domain ${vm.name} (UUID ${uuid}) lost its files; redefine it over the rebuilt ones` : `libvirt domain for ${vm.name} (${vm.cpus} CPUs, ${vm.memoryMib} MiB, ${type === "kvm" ? "KVM" : "TCG"})`,
      consent: true,
      actions: [{ kind: "run", argv: virshArgv(uri, "define", "/dev/stdin"), input: xml }],
    });
  } catch (e) {
    if (!runner.dryRun) {
      await runner.remove(work).catch(() => {});
      await rollbackCreate(runner, vm, { hadDomain: !!uuid, freshDir, created });
    }
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

export const SEED_PARTS = ["user-data", "meta-data", "network-config"] as const;
export type SeedPart = (typeof SEED_PARTS)[number];

/** What stands in for the guest's private host key in a preview, unless --show-secrets. */
export const REDACTED_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nREDACTED/by/aivm/pass/show/secrets/flag/to/print/it\n-----END OPENSSH PRIVATE KEY-----\n";

/**
 * One cloud-init document as `vm create` writes it; placeholders stand in for keys not generated yet (warned), and the
 * guest's private host key is redacted unless showSecrets (it lets anyone who sees it impersonate the VM to you).
 */
export function previewSeed(runner: Runner, vm: Vm, part: SeedPart, o: { showSecrets?: boolean } = {}): string {
  const f = vmFiles(vm);
  const priv = runner.host.readFile(f.hostKey);
  const pub = runner.host.readFile(f.hostKeyPub);
  const authorizedKey = runner.host.readFile(vm.paths.sshPubkey);
  if (!(priv && pub) && part !== "network-config") log.warn(`${vm.name} has no host key yet (\`aivm vm create\` generates it): this preview shows a placeholder in its place`);
  if (!authorizedKey && part === "user-data") log.warn(`no SSH public key at ${vm.paths.sshPubkey}: this preview shows a placeholder in its place`);
  return seedDocuments(vm, {
    authorizedKey: authorizedKey ?? "ssh-ed25519 PLACEHOLDER-your-key",
    hostKey: priv && pub ? { privateKey: o.showSecrets ? priv : REDACTED_KEY, publicKey: pub.trim() } : PLACEHOLDER_HOST_KEY,
  })[part];
}

/** The domain XML `vm create` would define (no libvirtd needed). */
export function previewDomain(runner: Runner, vm: Vm): string {
  const type = chooseAccel(vm.accel, probeAccel(runner.host));
  return renderDomainXml(planDomain(vm, { type, image: cachedImage(vm.paths, vm.image.sha256), exists: (p) => runner.host.exists(p) }));
}
