import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fakeRunner, type FakeBackend } from "./helpers/fake-runner.ts";
import type { StoreDoc, Vm } from "../lib/config/model.ts";
import { resolveVm } from "../lib/config/resolve.ts";
import { ensureVm, instanceId, overlayArgv, planDomain } from "../lib/vm/create.ts";
import { realHost } from "../lib/host.ts";
import { startVm, Clock, deleteVm, stopVm, UNDEFINE_ATTEMPTS } from "../lib/vm/power.ts";
import { vmDirProblem, vmFiles } from "../lib/vm/files.ts";
import { accelChoice, chooseAccel, probeAccel } from "../lib/accel.ts";
import { AivmError } from "../lib/errors.ts";
import { macAddress } from "../lib/domain.ts";
import { leaseIp, parseDomifaddr } from "../lib/libvirt/parse.ts";
import { vmIp, waitVm } from "../lib/vm/ip.ts";
import { domainState } from "../lib/libvirt/virsh.ts";

const URI = "qemu:///system";
const V = ["virsh", "-q", "-c", URI];
const SHA = "a".repeat(64);
const UUID = "0b3c1c1e-0000-4000-8000-000000000001";
const NO_DOMAIN = { exitCode: 1, stderr: "error: failed to get domain 'box'\nerror: Domain not found: no domain with matching name 'box'\n" };

let root: string;
let doc: StoreDoc;
let vm: Vm;

function setup(o: { kernel?: boolean; cached?: boolean } = {}) {
  root = mkdtempSync(join(tmpdir(), "aivm-vm-"));
  const cache = join(root, "images");
  mkdirSync(cache, { recursive: true });
  mkdirSync(join(root, "vms"), { recursive: true });
  writeFileSync(join(root, "id"), "PRIVATE");
  writeFileSync(join(root, "id.pub"), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJd8bA4GkOQ6+9W1fU8vU1mC2o8m9uF3oVb2Q8x6oYy user@host\n");
  if (o.cached !== false) {
    writeFileSync(join(cache, `${SHA}.img`), "");
    const manifest: Record<string, string> = { sha256: SHA, format: "qcow2", source: "file:///base.qcow2", created: "2026-01-01T00:00:00Z" };
    if (o.kernel) {
      writeFileSync(join(cache, `${SHA}.vmlinuz`), "");
      writeFileSync(join(cache, `${SHA}.initrd`), "");
      Object.assign(manifest, { kernel: `${SHA}.vmlinuz`, initrd: `${SHA}.initrd`, cmdline: "root=/dev/vda rw console=ttyS0" });
    }
    writeFileSync(join(cache, `${SHA}.json`), JSON.stringify(manifest));
  }
  doc = {
    defaults: {
      vm: { name: "box", accel: "tcg", shutdown_timeout_s: 3, wait_timeout_s: 30 },
      image: { url: "file:///base.qcow2", sha256: SHA },
      paths: { vm_root: join(root, "vms"), image_cache: cache, ssh_identity: join(root, "id"), libvirt_uri: URI },
    },
  };
  vm = resolveVm(doc);
}

/** A clock that moves only when slept on: timeouts are tested without waiting. */
function fakeClock(): Clock & { t: number } {
  const c = { t: 1_000_000, now: () => c.t, sleep: async (ms: number) => { c.t += ms; } };
  return c;
}

/** Collect what goes to stderr (consola writes there). */
let stderr = "";
let restore: (() => void) | undefined;
beforeEach(() => {
  stderr = "";
  const orig = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((s: string) => { stderr += s; return true; }) as typeof process.stderr.write;
  restore = () => { process.stderr.write = orig; };
});
afterEach(() => { restore?.(); });

/** Script a fresh create: the real files appear as the real tools would make them. */
function scriptCreate(fake: FakeBackend, o: { define?: "ok" | "fail" | "fail-but-defined" } = {}) {
  const f = vmFiles(vm);
  let defined = false;
  fake.on([...V, "domuuid", "box"], () => (defined ? { stdout: UUID + "\n" } : NO_DOMAIN));
  fake.diskTools();
  fake.on([...V, "define", "/dev/stdin"], () => {
    if (o.define === "fail") return { exitCode: 1, stderr: "error: XML error: bad thing\n" };
    if (o.define === "fail-but-defined") { defined = true; return { exitCode: 1, stderr: "error: something after define\n" }; }
    defined = true;
    return { stdout: "Domain 'box' defined\n" };
  });
  fake.on([...V, "undefine"], () => { defined = false; return {}; });
  void f;
}

// ---------- accel ----------

describe("accel", () => {
  test.each([
    ["auto", true, true, "kvm", false, false],
    ["auto", true, false, "qemu", true, false],
    ["auto", false, true, "qemu", true, false],
    ["auto", false, false, "qemu", true, false],
    ["tcg", true, true, "qemu", false, false],
    ["tcg", false, false, "qemu", false, false],
    ["kvm", true, true, "kvm", false, false],
    ["kvm", true, false, "kvm", false, true],
    ["kvm", false, true, "kvm", false, true],
  ] as const)("%s with kvm usable=%p, vmx/svm=%p -> %s (warning %p, error %p)", (mode, kvmUsable, cpuVirt, type, warning, error) => {
    const c = accelChoice(mode, { kvmUsable, cpuVirt, kvmWhy: kvmUsable ? undefined : "/dev/kvm does not exist" });
    expect(c.type).toBe(type);
    expect(!!c.warning).toBe(warning);
    expect(!!c.error).toBe(error);
  });
  test("the auto warning says why; an unusable explicit kvm is exit 1 with the reason", () => {
    expect(accelChoice("auto", { kvmUsable: true, cpuVirt: false }).warning).toContain("no vmx or svm");
    expect(accelChoice("auto", { kvmUsable: false, kvmWhy: "/dev/kvm is not writable by this user", cpuVirt: true }).warning).toContain("not writable");
    try {
      chooseAccel("kvm", { kvmUsable: false, kvmWhy: "/dev/kvm does not exist", cpuVirt: true });
      throw new Error("no throw");
    } catch (e) {
      expect(e).toBeInstanceOf(AivmError);
      expect((e as AivmError).exitCode).toBe(1);
      expect((e as AivmError).why).toContain("/dev/kvm does not exist");
    }
  });
  test("the auto warning is printed once per process", () => {
    const p = { kvmUsable: false, cpuVirt: false };
    chooseAccel("auto", p);
    chooseAccel("auto", p);
    expect(stderr.split("\n").filter((l) => l.includes("KVM is not available")).length).toBe(1);
  });
  test("probeAccel reads the files it is given", () => {
    const d = mkdtempSync(join(tmpdir(), "aivm-accel-"));
    writeFileSync(join(d, "kvm"), "");
    writeFileSync(join(d, "cpuinfo"), "processor\t: 0\nflags\t\t: fpu vme svm sse\n");
    expect(probeAccel(realHost, join(d, "kvm"), join(d, "cpuinfo"))).toEqual({ kvmUsable: true, cpuVirt: true });
    writeFileSync(join(d, "cpuinfo"), "flags\t\t: fpu vme hypervisor\n");
    const p = probeAccel(realHost, join(d, "nokvm"), join(d, "cpuinfo"));
    expect(p.kvmUsable).toBe(false);
    expect(p.kvmWhy).toContain("does not exist");
    expect(p.cpuVirt).toBe(false);
  });
});

// ---------- planners ----------

describe("planners", () => {
  beforeEach(() => setup());
  test("vmFiles keeps everything under vm.dir", () => {
    const f = vmFiles(vm);
    for (const [k, p] of Object.entries(f)) if (k !== "dir") expect(p.startsWith(vm.dir + "/")).toBe(true);
    expect(f.disk).toBe(join(vm.dir, "disk.qcow2"));
    expect(f.lock).toBe(join(vm.dir, ".lock"));
  });
  test("the overlay is a qcow2 backed by the base (-b and -F), sized in GiB", () => {
    expect(overlayArgv({ path: "/c/x.img", format: "raw" }, "/v/disk.qcow2", 20)).toEqual(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", "/c/x.img", "/v/disk.qcow2", "20G"]);
  });
  test("UEFI when OVMF exists and the image has no kernel; direct kernel boot otherwise; virtiofsd when present", () => {
    const all = () => true;
    const img = { sha256: SHA, path: "/c/a.img", format: "qcow2" as const };
    const uefi = planDomain(vm, { type: "qemu", image: img, exists: all });
    expect(uefi.firmware).toEqual({ loader: "/usr/share/OVMF/OVMF_CODE_4M.fd", varsTemplate: "/usr/share/OVMF/OVMF_VARS_4M.fd", nvram: vmFiles(vm).nvram });
    expect(uefi.kernel).toBeUndefined();
    expect(uefi.virtiofsd).toBe("/usr/lib/qemu/virtiofsd");
    const only2m = planDomain(vm, { type: "qemu", image: img, exists: (p) => !p.includes("_4M") });
    expect(only2m.firmware?.loader).toBe("/usr/share/OVMF/OVMF_CODE.fd");
    const bios = planDomain(vm, { type: "qemu", image: img, exists: () => false });
    expect(bios.firmware).toBeUndefined();
    expect(bios.virtiofsd).toBeUndefined();
    const direct = planDomain(vm, { type: "qemu", image: { ...img, kernel: "/c/k", initrd: "/c/i" }, exists: all, uuid: UUID });
    expect(direct.firmware).toBeUndefined();
    expect(direct.kernel).toEqual({ kernel: "/c/k", initrd: "/c/i", cmdline: "root=/dev/vda rw console=ttyS0" });
    expect(direct.uuid).toBe(UUID);
    // every domain carries the VM's shared-root export from creation (cold-plugged: no hot-plug later)
    expect(direct.filesystems).toEqual([{ source: join(vm.dir, "export"), tag: "aivm-root", readonly: false }]);
  });
  test("instance-id follows the host key", () => {
    expect(instanceId("box", "ssh-ed25519 A")).toBe(instanceId("box", "ssh-ed25519 A\n"));
    expect(instanceId("box", "ssh-ed25519 A")).not.toBe(instanceId("box", "ssh-ed25519 B"));
  });
  test("vm.dir must be strictly inside vm_root", () => {
    expect(vmDirProblem(vm)).toBeUndefined();
    expect(vmDirProblem({ ...vm, dir: "/etc" })).toContain("not strictly inside");
    expect(vmDirProblem({ ...vm, dir: vm.paths.vmRoot })).toContain("not strictly inside");
    expect(vmDirProblem({ ...vm, dir: join(vm.paths.vmRoot, "..", "x") })).toContain("not strictly inside");
    expect(vmDirProblem({ ...vm, paths: { ...vm.paths, vmRoot: "/" }, dir: "/box" })).toContain("not strictly inside");
    const outside = mkdtempSync(join(tmpdir(), "aivm-outside-"));
    symlinkSync(outside, vm.dir);
    expect(vmDirProblem(vm)).toContain("outside vm_root");
  });
});

// ---------- create ----------

describe("ensureVm", () => {
  beforeEach(() => setup());

  test("a fresh create: dir, overlay (no copy of the base), host key, known_hosts, seed, define", async () => {
    const { runner, fake } = fakeRunner();
    scriptCreate(fake);
    const f = vmFiles(vm);
    expect(await ensureVm(runner, vm)).toBe("created");
    const cmds = fake.commands();
    expect(cmds[0]).toBe(`${V.join(" ")} domuuid box`);
    // every file is made in a private work directory, created exclusively, then renamed into place
    const work = join(f.dir, `.create-${process.pid}`);
    expect(cmds).toContain(`install -d -m 0755 ${f.dir}`);
    expect(cmds).toContain(`mkdir -m 0700 ${work}`);
    expect(cmds).toContain(`qemu-img create -q -f qcow2 -F qcow2 -b ${join(root, "images", SHA + ".img")} ${work}/disk.qcow2 20G`);
    expect(cmds.some((c) => /^(cp|rsync|dd) |qemu-img convert/.test(c))).toBe(false);
    expect(cmds).toContain(`ssh-keygen -q -t ed25519 -N  -C box -f ${work}/ssh_host_ed25519_key`);
    for (const [from, to] of [["disk.qcow2", f.disk], ["ssh_host_ed25519_key", f.hostKey], ["seed.img", f.seed]]) expect(cmds).toContain(`mv -T ${work}/${from} ${to}`);
    expect(cmds.at(-1)).toBe(`${V.join(" ")} define /dev/stdin`);
    const writes = fake.calls.filter((c) => c.kind === "write").map((c) => c.path);
    expect(writes).toEqual([f.knownHosts, join(work, "user-data"), join(work, "meta-data"), join(work, "network-config")]);
    expect(fake.calls.find((c) => c.path === join(work, "user-data"))!.mode).toBe(0o600);
    // the seed documents (they hold the private host key) do not stay behind
    expect(existsSync(work)).toBe(false);
    expect(readFileSync(f.knownHosts, "utf8")).toContain("AAAAC3NzaC1lZDI1NTE5AAAAIHostKey");
    const define = fake.calls.find((c) => c.argv?.includes("define"))!;
    expect(define.input).toContain("<name>box</name>");
    expect(define.input).toContain(`<source file='${f.disk}'/>`);
    expect(define.input).toContain(`<source file='${f.seed}'/>`);
    expect(define.input).toContain("type='qemu'");
    expect(define.input).not.toContain("<uuid>");
    // the seed (with the private host key) and the disk are not world-readable
    expect(cmds).toContain(`chmod 0600 ${work}/disk.qcow2 ${work}/seed.img`);
  });

  test("direct kernel boot when the cached image carries kernel and initrd", async () => {
    setup({ kernel: true });
    const { runner, fake } = fakeRunner();
    scriptCreate(fake);
    await ensureVm(runner, vm);
    const xml = fake.calls.find((c) => c.argv?.includes("define"))!.input!;
    expect(xml).toContain(`<kernel>${join(root, "images", SHA + ".vmlinuz")}</kernel>`);
    expect(xml).not.toContain("<loader");
  });

  test("an existing domain with an intact directory is unchanged: only reads", async () => {
    const { runner, fake } = fakeRunner();
    scriptCreate(fake);
    await ensureVm(runner, vm);
    fake.calls.length = 0;
    expect(await ensureVm(runner, vm)).toBe("unchanged");
    expect(fake.commands()).toEqual([`${V.join(" ")} domuuid box`]);
  });

  test("a failing define removes the new directory and leaves no domain", async () => {
    const { runner, fake } = fakeRunner();
    scriptCreate(fake, { define: "fail" });
    await expect(ensureVm(runner, vm)).rejects.toThrow(/XML error/);
    expect(existsSync(vm.dir)).toBe(false);
    expect(fake.commands().some((c) => c.includes(" undefine "))).toBe(false);
  });

  test("a domain that appeared despite the error is undefined again", async () => {
    const { runner, fake } = fakeRunner();
    scriptCreate(fake, { define: "fail-but-defined" });
    await expect(ensureVm(runner, vm)).rejects.toThrow();
    expect(fake.commands()).toContain(`${V.join(" ")} undefine box --nvram`);
    expect(existsSync(vm.dir)).toBe(false);
  });

  test("a failure in an existing directory removes only what this call created", async () => {
    const { runner, fake } = fakeRunner();
    scriptCreate(fake);
    const f = vmFiles(vm);
    mkdirSync(f.dir, { recursive: true });
    writeFileSync(f.disk, "guest data");
    scriptCreate(fake, { define: "fail" });
    await expect(ensureVm(runner, vm)).rejects.toThrow();
    expect(readFileSync(f.disk, "utf8")).toBe("guest data");
    expect(existsSync(f.hostKey)).toBe(false);
    expect(existsSync(f.seed)).toBe(false);
    expect(fake.commands().some((c) => c.startsWith("qemu-img"))).toBe(false);
  });

  test("image not cached: exit 1 naming `aivm image fetch`, nothing created", async () => {
    setup({ cached: false });
    const { runner, fake } = fakeRunner();
    scriptCreate(fake);
    await expect(ensureVm(runner, vm)).rejects.toThrow(/image not cached: run aivm image fetch/);
    expect(existsSync(vm.dir)).toBe(false);
    expect(fake.commands()).toEqual([`${V.join(" ")} domuuid box`]);
  });

  test("stale: the domain exists but its directory is gone -> rebuilt and redefined with the same UUID", async () => {
    const { runner, fake } = fakeRunner();
    scriptCreate(fake);
    fake.on([...V, "domuuid", "box"], { stdout: UUID + "\n" });
    expect(await ensureVm(runner, vm)).toBe("created");
    const xml = fake.calls.find((c) => c.argv?.includes("define"))!.input!;
    expect(xml).toContain(`<uuid>${UUID}</uuid>`);
    expect(stderr).toContain("incomplete");
  });

  test("stale: the directory exists but the domain is gone -> disk and key kept, defined afresh", async () => {
    const { runner, fake } = fakeRunner();
    scriptCreate(fake);
    await ensureVm(runner, vm);
    const key = readFileSync(vmFiles(vm).hostKey, "utf8");
    fake.calls.length = 0;
    scriptCreate(fake); // the domain is gone
    expect(await ensureVm(runner, vm)).toBe("created");
    const cmds = fake.commands();
    expect(cmds.some((c) => c.startsWith("qemu-img") || c.startsWith("ssh-keygen"))).toBe(false);
    expect(cmds.at(-1)).toContain("define /dev/stdin");
    expect(readFileSync(vmFiles(vm).hostKey, "utf8")).toBe(key);
  });

  test("--dry-run prints every change and makes none", async () => {
    const { runner, fake, printed } = fakeRunner({ dryRun: true });
    scriptCreate(fake);
    expect(await ensureVm(runner, vm)).toBe("created");
    expect(fake.commands()).toEqual([`${V.join(" ")} domuuid box`]);
    expect(fake.calls.filter((c) => c.kind !== "exec")).toEqual([]);
    expect(existsSync(vm.dir)).toBe(false);
    const text = printed.join("\n");
    expect(text).toContain("qemu-img create");
    expect(text).toContain("ssh-keygen -q -t ed25519");
    expect(text).toContain("# step: Define VM box");
    expect(text).toContain("user-data");
  });

  test("a VM dir outside vm_root is refused before anything runs", async () => {
    const { runner, fake } = fakeRunner();
    await expect(ensureVm(runner, { ...vm, dir: "/etc/box" })).rejects.toThrow(/not strictly inside/);
    expect(fake.calls).toEqual([]);
  });
});

// ---------- up / down / delete ----------

describe("startVm", () => {
  beforeEach(() => setup());
  test.each([
    ["running", "unchanged", []],
    ["paused", "resumed", ["resume box"]],
    ["pmsuspended", "resumed", ["dompmwakeup box"]],
    ["shut off", "started", ["start box"]],
    ["crashed", "started", ["destroy box", "start box"]],
  ] as const)("%s -> %s", async (state, result, cmds) => {
    const { runner, fake } = fakeRunner();
    fake.on([...V, "domstate", "box"], { stdout: `${state}\n\n` });
    for (const c of ["resume", "dompmwakeup", "start", "destroy"]) fake.on([...V, c], {});
    expect(await startVm(runner, vm)).toBe(result);
    expect(fake.commands().filter((c) => !c.includes("domstate")).map((c) => c.slice(V.join(" ").length + 1))).toEqual([...cmds]);
  });
  test("absent -> exit 1, not created", async () => {
    const { runner, fake } = fakeRunner();
    fake.on([...V, "domstate", "box"], NO_DOMAIN);
    await expect(startVm(runner, vm)).rejects.toThrow("not created: run aivm vm create");
  });
  test("in shutdown: waits for it to stop, then starts", async () => {
    const { runner, fake } = fakeRunner();
    fake.on([...V, "domstate", "box"], { stdout: "shut off\n" });
    fake.on([...V, "domstate", "box"], { stdout: "in shutdown\n" }, 3);
    fake.on([...V, "start"], {});
    expect(await startVm(runner, vm, { clock: fakeClock() })).toBe("started");
    expect(fake.commands().filter((c) => c.includes("domstate"))).toHaveLength(4);
  });
  test("--dry-run prints the start and runs nothing", async () => {
    const { runner, fake, printed } = fakeRunner({ dryRun: true });
    fake.on([...V, "domstate", "box"], { stdout: "shut off\n" });
    expect(await startVm(runner, vm)).toBe("started");
    expect(printed).toEqual([`virsh -q -c qemu:///system start box`]);
    expect(fake.commands()).toEqual([`${V.join(" ")} domstate box`]);
  });
});

describe("stopVm", () => {
  beforeEach(() => setup());
  test("ACPI shutdown, polled until shut off; no destroy", async () => {
    const { runner, fake } = fakeRunner();
    fake.on([...V, "domstate", "box"], { stdout: "shut off\n" });
    fake.on([...V, "domstate", "box"], { stdout: "running\n" }, 2);
    fake.on([...V, "shutdown"], {});
    expect(await stopVm(runner, vm, { clock: fakeClock() })).toBe("stopped");
    expect(fake.commands()).toContain(`${V.join(" ")} shutdown box --mode acpi`);
    expect(fake.commands().some((c) => c.includes("destroy"))).toBe(false);
  });
  test("timeout -> destroy only after it, with a warning saying so", async () => {
    const { runner, fake } = fakeRunner();
    const clock = fakeClock();
    const t0 = clock.t;
    let destroyedAt = 0;
    fake.on([...V, "domstate", "box"], { stdout: "running\n" });
    fake.on([...V, "shutdown"], {});
    fake.on([...V, "destroy"], () => { destroyedAt = clock.t; return {}; });
    vm.shutdownTimeoutS = 12;
    expect(await stopVm(runner, vm, { clock })).toBe("forced");
    expect(destroyedAt - t0).toBeGreaterThanOrEqual(12_000);
    expect(stderr).toContain("did not shut down within 12s");
    expect(stderr).toContain("forcing it off");
    expect(stderr).toMatch(/waiting for box to shut down \(\d+s of 12s\)/);
    // the ACPI button is pressed again for a guest that missed the first one
    expect(fake.commands().filter((c) => c.includes("shutdown box")).length).toBeGreaterThan(1);
  });
  test("already off or absent: unchanged, no shutdown sent", async () => {
    for (const reply of [{ stdout: "shut off\n" }, NO_DOMAIN]) {
      const { runner, fake } = fakeRunner();
      fake.on([...V, "domstate", "box"], reply);
      expect(await stopVm(runner, vm)).toBe("unchanged");
      expect(fake.commands()).toEqual([`${V.join(" ")} domstate box`]);
    }
  });
});

describe("deleteVm", () => {
  beforeEach(() => setup());
  function script(fake: FakeBackend, rejected: string[]) {
    fake.on([...V, "domstate", "box"], { stdout: "running\n" });
    fake.on([...V, "destroy"], {});
    fake.on([...V, "undefine"], (argv) => {
      const bad = rejected.find((f) => argv.includes(f));
      return bad ? { exitCode: 1, stderr: `error: command 'undefine' doesn't support option ${bad}\n` } : {};
    });
  }
  test("destroys, undefines with every flag, removes vm.dir", async () => {
    mkdirSync(vm.dir, { recursive: true });
    const { runner, fake } = fakeRunner();
    script(fake, []);
    expect(await deleteVm(runner, vm)).toBe("deleted");
    expect(fake.commands().slice(1).map((c) => c.slice(V.join(" ").length + 1))).toEqual([
      "destroy box",
      "undefine box --nvram --managed-save --snapshots-metadata --checkpoints-metadata",
    ]);
    expect(fake.calls.filter((c) => c.kind === "remove").map((c) => c.path)).toEqual([vm.dir]);
  });
  test("falls back to fewer flags when virsh rejects one", async () => {
    mkdirSync(vm.dir, { recursive: true });
    const { runner, fake } = fakeRunner();
    script(fake, ["--checkpoints-metadata", "--snapshots-metadata"]);
    expect(await deleteVm(runner, vm)).toBe("deleted");
    expect(fake.commands().filter((c) => c.includes("undefine")).map((c) => c.split(" box")[1]!.trim())).toEqual([
      UNDEFINE_ATTEMPTS[0]!.join(" "), UNDEFINE_ATTEMPTS[1]!.join(" "), UNDEFINE_ATTEMPTS[2]!.join(" "),
    ]);
  });
  test("a real undefine error is not retried", async () => {
    const { runner, fake } = fakeRunner();
    fake.on([...V, "domstate", "box"], { stdout: "shut off\n" });
    fake.on([...V, "undefine"], { exitCode: 1, stderr: "error: Requested operation is not valid: cannot undefine transient domain\n" });
    await expect(deleteVm(runner, vm)).rejects.toThrow(/cannot undefine transient domain/);
    expect(fake.commands().filter((c) => c.includes("undefine"))).toHaveLength(1);
  });
  test("refuses a vm.dir outside vm_root, touching nothing", async () => {
    const outside = mkdtempSync(join(tmpdir(), "aivm-shared-"));
    writeFileSync(join(outside, "precious"), "x");
    const { runner, fake } = fakeRunner();
    script(fake, []);
    await expect(deleteVm(runner, { ...vm, dir: outside })).rejects.toThrow(/not strictly inside/);
    expect(fake.calls).toEqual([]);
    symlinkSync(outside, vm.dir);
    await expect(deleteVm(runner, vm)).rejects.toThrow(/outside vm_root/);
    expect(fake.calls).toEqual([]);
    expect(existsSync(join(outside, "precious"))).toBe(true);
  });
  test("absent domain and no directory: says so, no change", async () => {
    const { runner, fake } = fakeRunner();
    fake.on([...V, "domstate", "box"], NO_DOMAIN);
    expect(await deleteVm(runner, vm)).toBe("absent");
    expect(stderr).toContain("does not exist");
    expect(fake.calls.filter((c) => c.kind !== "exec" || !c.argv!.includes("domstate"))).toEqual([]);
  });
  test("a leftover directory without a domain is removed", async () => {
    mkdirSync(vm.dir, { recursive: true });
    writeFileSync(vmFiles(vm).disk, "");
    const { runner, fake } = fakeRunner();
    fake.on([...V, "domstate", "box"], NO_DOMAIN);
    expect(await deleteVm(runner, vm)).toBe("deleted");
    expect(fake.commands().some((c) => c.includes("undefine"))).toBe(false);
    expect(fake.calls.filter((c) => c.kind === "remove").map((c) => c.path)).toEqual([vm.dir]);
  });
});

// ---------- IP and wait ----------

const MAC = () => macAddress("box");
const leases = (ip: string, mac = MAC()) => `2026-03-01 12:00:00  ${mac}  ipv4  ${ip}/24  box  ff:00\n`;

describe("vmIp", () => {
  beforeEach(() => setup());
  test("parsers", () => {
    const mac = MAC();
    expect(leaseIp(leases("10.77.0.5") + `2026-03-01 13:00:00  ${mac}  ipv4  10.77.0.9/24  box  ff:00\n`, mac)).toBe("10.77.0.9");
    expect(leaseIp(leases("10.77.0.5", "52:54:00:00:00:01"), mac)).toBeNull();
    expect(parseDomifaddr(` vnet0      ${mac}    ipv4         10.77.0.7/24\n`, mac)).toBe("10.77.0.7");
    expect(parseDomifaddr(` vnet0      52:54:00:00:00:01    ipv4         10.77.0.7/24\n`, mac)).toBeNull();
  });
  test("from the DHCP lease for the VM's MAC, cached in <dir>/ip", async () => {
    mkdirSync(vm.dir, { recursive: true });
    const { runner, fake } = fakeRunner();
    fake.on([...V, "net-dhcp-leases", vm.network.name, "--mac", MAC()], { stdout: leases("10.77.0.5") });
    expect(await vmIp(runner, vm)).toBe("10.77.0.5");
    expect(fake.calls.find((c) => c.kind === "write")).toMatchObject({ path: vmFiles(vm).ipCache, content: "10.77.0.5\n" });
  });
  test("falls back to domifaddr --source lease; null when neither knows", async () => {
    const { runner, fake } = fakeRunner();
    fake.on([...V, "net-dhcp-leases"], { stdout: "" });
    fake.on([...V, "domifaddr", "box", "--source", "lease"], { stdout: ` vnet0  ${MAC()}  ipv4  10.77.0.6/24\n` });
    expect(await vmIp(runner, vm)).toBe("10.77.0.6");
    fake.on([...V, "domifaddr"], { stdout: "" });
    expect(await vmIp(runner, vm)).toBeNull();
  });
});

describe("waitVm", () => {
  beforeEach(() => setup());
  const isSsh = (argv: string[], what: string) => argv[0] === "ssh" && argv.join(" ").endsWith(what);

  const isProbe = (argv: string[]) => argv[0] === "ssh" && argv.at(-1)!.includes("/run/cloud-init/result.json");
  const DONE = { stdout: 'result\n{"v1": {"datasource": "NoCloud", "errors": []}}\n' };

  test("IP, then SSH and cloud-init in one session, with progress naming the stage", async () => {
    const { runner, fake } = fakeRunner();
    fake.on([...V, "domstate", "box"], { stdout: "running\n" });
    fake.on([...V, "net-dhcp-leases"], { stdout: leases("10.77.0.5") });
    fake.on([...V, "net-dhcp-leases"], { stdout: "" }, 14);
    fake.on([...V, "domifaddr"], { stdout: "" });
    fake.on(isProbe, DONE);
    fake.on(isProbe, { exitCode: 255, stderr: "ssh: connect to host 10.77.0.5 port 22: Connection refused\n" }, 3);
    expect(await waitVm(runner, vm, { clock: fakeClock() })).toEqual({ ip: "10.77.0.5" });
    expect(stderr).toMatch(/box: waiting for an IP address \(DHCP lease\) \(\d+s\)/);
    const ssh = fake.calls.filter((c) => c.argv?.[0] === "ssh").map((c) => c.argv!);
    expect(ssh).toHaveLength(4);
    expect(ssh[0]!.join(" ")).toContain("10.77.0.5");
    expect(ssh[0]!.join(" ")).toContain("BatchMode=yes");
    expect(ssh[0]!.join(" ")).toContain("ConnectTimeout=5");
    // the guest waits for cloud-init in a shell loop: no Python, no `cloud-init status --wait`
    expect(ssh[3]!.at(-1)).toMatch(/^i=0; while \[ ! -e \/run\/cloud-init\/result.json \]/);
    expect(ssh.some((a) => a.join(" ").includes("cloud-init status"))).toBe(false);
  });

  test("a known address and a finished cloud-init: one ssh session, no libvirt call", async () => {
    const { runner, fake } = fakeRunner();
    fake.on(isProbe, DONE);
    expect(await waitVm(runner, vm, { clock: fakeClock(), known: { ip: "10.77.0.9" } })).toEqual({ ip: "10.77.0.9" });
    expect(fake.commands()).toHaveLength(1);
  });

  test("cloud-init still running: the stage says so, and a timeout names it", async () => {
    const { runner, fake } = fakeRunner();
    fake.on(isProbe, { stdout: "running\n" });
    const e = (await waitVm(runner, vm, { clock: fakeClock(), timeoutS: 20, known: { ip: "10.77.0.9" } }).catch((x) => x)) as AivmError;
    expect(e.why).toBe("timed out after 20s waiting for cloud-init to finish (last: cloud-init is running)");
  });

  test("cloud-init ended in error: a warning, not a failure", async () => {
    const { runner, fake } = fakeRunner();
    fake.on(isProbe, { stdout: 'result\n{"v1": {"errors": ["module write_files failed"]}}\n' });
    expect(await waitVm(runner, vm, { clock: fakeClock(), known: { ip: "10.77.0.9" } })).toEqual({ ip: "10.77.0.9" });
    expect(stderr).toContain("cloud-init reported an error in box: module write_files failed");
  });

  test("timeout in the SSH stage names the stage and points at console-log", async () => {
    const { runner, fake } = fakeRunner();
    fake.on([...V, "domstate", "box"], { stdout: "running\n" });
    fake.on([...V, "net-dhcp-leases"], { stdout: leases("10.77.0.5") });
    fake.on(isProbe, { exitCode: 255, stderr: "ssh: connect to host 10.77.0.5 port 22: Connection refused\n" });
    const e = (await waitVm(runner, vm, { clock: fakeClock(), timeoutS: 20 }).catch((x) => x)) as AivmError;
    expect(e).toBeInstanceOf(AivmError);
    expect(e.why).toBe("timed out after 20s waiting for SSH (pinned host key) (last: ssh: connect to host 10.77.0.5 port 22: Connection refused)");
    expect(e.hint).toContain("aivm vm console-log");
    expect(stderr).toMatch(/waiting for SSH \(pinned host key\) \(\d+s\)/);
  });

  test("timeout waiting for the IP names that stage", async () => {
    const { runner, fake } = fakeRunner();
    fake.on([...V, "domstate", "box"], { stdout: "running\n" });
    fake.on([...V, "net-dhcp-leases"], { stdout: "" });
    fake.on([...V, "domifaddr"], { stdout: "" });
    await expect(waitVm(runner, vm, { clock: fakeClock(), timeoutS: 10 })).rejects.toThrow("timed out after 10s waiting for an IP address (DHCP lease)");
  });

  test("a VM that is not running fails at once", async () => {
    const { runner, fake } = fakeRunner();
    fake.on([...V, "domstate", "box"], { stdout: "shut off\n" });
    await expect(waitVm(runner, vm, { clock: fakeClock() })).rejects.toThrow("the VM is shut off, not running");
  });

  test("an image without cloud-init's result files: boot-finished counts as finished", async () => {
    const { runner, fake } = fakeRunner();
    fake.on(isProbe, { stdout: "boot-finished\n" });
    expect(await waitVm(runner, vm, { clock: fakeClock(), known: { ip: "10.77.0.9" } })).toEqual({ ip: "10.77.0.9" });
  });
});

describe("domainState", () => {
  beforeEach(() => setup());
  test("absent vs an unexpected virsh error", async () => {
    const { runner, fake } = fakeRunner();
    fake.on([...V, "domstate", "box"], NO_DOMAIN);
    expect(await domainState(runner, URI, "box")).toBe("absent");
    fake.on([...V, "domstate", "box"], { exitCode: 1, stderr: "error: internal error: boom\n" });
    await expect(domainState(runner, URI, "box")).rejects.toThrow("internal error: boom");
  });
});

describe("imported VMs (aivm config discover)", () => {
  const base = () => ({ ...resolveVm({ vms: [{ name: "theirs", network: "n", imported: true }], networks: [{ name: "n" }] }, "theirs") });
  const V = ["virsh", "-q", "-c", "qemu:///system"];

  test("create never rebuilds one: present is unchanged, gone is an error", async () => {
    const vm = base();
    expect(vm.imported).toBe(true);
    const ok = fakeRunner();
    ok.fake.on([...V, "domuuid", "theirs"], { stdout: "6f1c2b7e-0000-4000-8000-000000000001\n" });
    expect(await ensureVm(ok.runner, vm)).toBe("unchanged");
    expect(ok.fake.commands()).toEqual([`${V.join(" ")} domuuid theirs`]);
    const gone = fakeRunner();
    gone.fake.on([...V, "domuuid", "theirs"], { exitCode: 1, stderr: "error: failed to get domain 'theirs'" });
    await expect(ensureVm(gone.runner, vm)).rejects.toThrow("aivm cannot recreate a VM it did not create");
  });

  test("delete undefines without --nvram (the nvram is not aivm's)", async () => {
    const { runner, fake } = fakeRunner();
    fake.on([...V, "domstate", "theirs"], { stdout: "shut off\n" });
    fake.on([...V, "undefine"], { exitCode: 1, stderr: "error: unsupported flag" });
    fake.on([...V, "undefine", "theirs"], {}, 1);
    await deleteVm(runner, base()).catch(() => {});
    const undefines = fake.commands().filter((c: string) => c.includes(" undefine "));
    expect(undefines.length).toBeGreaterThan(0);
    for (const c of undefines) expect(c).not.toContain("--nvram");
  });
});
