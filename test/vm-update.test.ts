// `aivm vm update`: plans (vCPUs, memory, grow-only disk, firewall), shrink refusal, restart policies, dry run.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fakeRunner } from "./helpers/fake-runner.ts";
import type { StoreDoc, Vm } from "../lib/config/model.ts";
import { resolveVm } from "../lib/config/resolve.ts";
import { ROOT_TAG } from "../lib/share/names.ts";
import { describePlan, planUpdate, type UpdateFacts } from "../lib/vm/update-plan.ts";
import { GIB, parseDomainXml } from "../lib/libvirt/parse.ts";
import type { Clock } from "../lib/vm/power.ts";
import { applyUpdate, updateFacts } from "../lib/flows/vm-update.ts";
import { EXIT, UsageError } from "../lib/errors.ts";
import { expectedTable } from "../lib/fw.ts";

const URI = "qemu:///system";
const V = ["virsh", "-q", "-c", URI];
let root: string;

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "aivm-update-"));
  mkdirSync(join(root, "vms", "box"), { recursive: true });
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

function vm(o: { cpus?: number; memory_mib?: number; disk_gib?: number } = {}): Vm {
  const doc: StoreDoc = {
    defaults: {
      vm: { name: "box", cpus: o.cpus ?? 2, memory_mib: o.memory_mib ?? 2048, disk_gib: o.disk_gib ?? 8, accel: "tcg", shutdown_timeout_s: 5 },
      paths: { vm_root: join(root, "vms"), image_cache: join(root, "images"), ssh_identity: join(root, "id"), libvirt_uri: URI },
    },
    networks: [{ name: "aivm-net", subnet: "10.77.0.0/24", firewall: { allow_tcp_ports: [8080] } }],
    vms: [{ name: "box", network: "aivm-net" }],
  };
  return resolveVm(doc);
}

function xml(o: { vcpus?: number; current?: number; memMib?: number } = {}): string {
  const cur = o.current !== undefined ? ` current='${o.current}'` : "";
  return `<domain type='qemu'><name>box</name><memory unit='KiB'>${(o.memMib ?? 2048) * 1024}</memory><currentMemory unit='KiB'>${(o.memMib ?? 2048) * 1024}</currentMemory>
<vcpu placement='static'${cur}>${o.vcpus ?? 2}</vcpu><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${join(root, "vms/box/disk.qcow2")}'/><target dev='vda' bus='virtio'/></disk>
<filesystem type='mount'><driver type='virtiofs'/><source dir='${join(root, "vms/box/export")}'/><target dir='${ROOT_TAG}'/></filesystem>
</devices></domain>`;
}

const facts = (o: Partial<UpdateFacts> & { xml?: string } = {}): UpdateFacts => ({
  state: o.state ?? "running",
  persistent: o.persistent ?? parseDomainXml(o.xml ?? xml()),
  live: o.live !== undefined ? o.live : (o.state ?? "running") === "shut off" ? null : parseDomainXml(xml()),
  diskBytes: o.diskBytes !== undefined ? o.diskBytes : 8 * GIB,
  fw: o.fw !== undefined ? o.fw : { network: "aivm-net", table: "aivm_aivm_net", enabled: true, present: true, equal: true, drift: [] },
});

const argvs = (p: ReturnType<typeof planUpdate>) => p.changes.flatMap((c) => c.actions.map((a) => (a.kind === "run" ? a.argv.slice(a.argv[0] === "virsh" ? 4 : 0).join(" ") : a.kind)));

describe("planUpdate", () => {
  test("no drift: nothing to update", () => {
    const p = planUpdate(vm(), facts());
    expect(p).toMatchObject({ changes: [], restartNeeded: false, refusals: [], notes: [] });
    expect(describePlan(p)).toEqual(["nothing to update: box matches the config"]);
  });

  test("more vCPUs and memory: maximum first, then current; a running VM needs a restart", () => {
    const p = planUpdate(vm({ cpus: 4, memory_mib: 4096 }), facts());
    expect(argvs(p)).toEqual([
      "setvcpus box 4 --config --maximum", "setvcpus box 4 --config",
      "setmaxmem box 4194304 --config", "setmem box 4194304 --config",
    ]);
    expect(p.restartNeeded).toBe(true);
    expect(describePlan(p)).toEqual(["- cpus: 2 -> 4 (restart needed)", "- memory: 2048 MiB -> 4096 MiB (restart needed)"]);
  });

  test("fewer vCPUs and memory: current first, then the maximum; a shut-off VM needs no restart", () => {
    const p = planUpdate(vm({ cpus: 1, memory_mib: 1024 }), facts({ state: "shut off" }));
    expect(argvs(p)).toEqual([
      "setvcpus box 1 --config", "setvcpus box 1 --config --maximum",
      "setmem box 1048576 --config", "setmaxmem box 1048576 --config",
    ]);
    expect(p.restartNeeded).toBe(false);
  });

  test("a current vCPU count below the maximum is drift too", () => {
    const p = planUpdate(vm({ cpus: 4 }), facts({ xml: xml({ vcpus: 4, current: 2 }) }));
    expect(p.changes.map((c) => c.what)).toEqual(["cpus"]);
  });

  test("disk grow: blockresize while running, qemu-img resize when shut off, no restart", () => {
    let p = planUpdate(vm({ disk_gib: 12 }), facts());
    expect(argvs(p)).toEqual(["blockresize box vda 12G"]);
    expect(p.restartNeeded).toBe(false);
    expect(describePlan(p)).toEqual(["- disk: 8 GiB -> 12 GiB"]);
    p = planUpdate(vm({ disk_gib: 12 }), facts({ state: "shut off" }));
    expect(argvs(p)).toEqual([`qemu-img resize -f qcow2 ${join(root, "vms/box/disk.qcow2")} 12G`]);
  });

  test("disk shrink is refused with the reason and the size to set", () => {
    const p = planUpdate(vm({ disk_gib: 4 }), facts({ diskBytes: 8 * GIB + 1 }));
    expect(p.changes).toEqual([]);
    expect(p.refusals[0]).toContain("never shrinks");
    expect(p.refusals[0]).toContain("Set disk_gib to 9 or more");
  });

  test("firewall drift: a firewall change without a restart; unreadable disk size is a note", () => {
    const p = planUpdate(vm(), facts({ diskBytes: null, fw: { network: "aivm-net", table: "aivm_aivm_net", enabled: true, present: true, equal: false, drift: ["missing: tcp dport 8080 accept"] } }));
    expect(p.changes).toMatchObject([{ what: "firewall", from: "table differs (ports)", restart: false, actions: [] }]);
    expect(p.notes[0]).toContain("could not be read");
  });

  test("earlier --config changes waiting: restart needed with no change", () => {
    const p = planUpdate(vm({ cpus: 4 }), facts({ xml: xml({ vcpus: 4 }), live: parseDomainXml(xml({ vcpus: 2 })) }));
    expect(p.changes).toEqual([]);
    expect(p.restartNeeded).toBe(true);
    expect(p.notes).toEqual(["earlier vCPU/memory changes are in the persistent definition and wait for a restart"]);
  });
});

/** A VM that shuts down at the first ACPI request and starts again. */
function scripted(o: { state?: string } = {}) {
  const f = fakeRunner({ yes: false, interactive: true, ask: async () => answer });
  let state = o.state ?? "running";
  let answer = "y";
  f.fake.on([...V, "domstate", "box"], () => ({ stdout: state + "\n" }));
  f.fake.on([...V, "setvcpus"], {});
  f.fake.on([...V, "setmaxmem"], {});
  f.fake.on([...V, "setmem"], {});
  f.fake.on([...V, "blockresize"], {});
  f.fake.on([...V, "shutdown"], () => ((state = "shut off"), {}));
  f.fake.on([...V, "start"], () => ((state = "running"), {}));
  f.fake.on([...V, "net-dhcp-leases"], { stdout: "" });
  f.fake.on([...V, "domifaddr"], { stdout: "" });
  return { ...f, setAnswer: (a: string) => (answer = a) };
}
const clock: Clock = { now: () => 0, sleep: async () => {} };
const ran = (cmds: string[], verb: string) => cmds.filter((c) => c.split(" ")[4] === verb).length;

describe("applyUpdate and the restart policy", () => {
  test("auto asks; yes restarts (ACPI shutdown, start)", async () => {
    const { runner, fake } = scripted();
    const v = vm({ cpus: 4 });
    const r = await applyUpdate(runner, v, planUpdate(v, facts()), { restart: "auto", clock, configPath: join(tmpdir(), "aivm-none.toml") });
    expect(r).toMatchObject({ applied: ["cpus"], restarted: true, restartPending: false });
    expect(ran(fake.commands(), "shutdown")).toBe(1);
    expect(ran(fake.commands(), "start")).toBe(1);
  });

  test("auto, answer no: the restart stays pending", async () => {
    const s = scripted();
    const v = vm({ cpus: 4 });
    const plan = planUpdate(v, facts());
    // approve the step, decline the restart
    let n = 0;
    const { runner, fake } = { runner: new (s.runner.constructor as typeof import("../lib/run.ts").Runner)(s.fake, { isRoot: true, interactive: true, ask: async () => (n++ === 0 ? "y" : "n") }), fake: s.fake };
    const r = await applyUpdate(runner, v, plan, { restart: "auto", clock, configPath: join(tmpdir(), "aivm-none.toml") });
    expect(r).toMatchObject({ restarted: false, restartPending: true });
    expect(ran(fake.commands(), "shutdown")).toBe(0);
  });

  test("never: changes applied, restart pending; always: restarts", async () => {
    let s = scripted();
    const v = vm({ memory_mib: 3072 });
    let r = await applyUpdate(s.runner, v, planUpdate(v, facts()), { restart: "never", clock, configPath: join(tmpdir(), "aivm-none.toml") });
    expect(r).toMatchObject({ applied: ["memory"], restarted: false, restartPending: true });
    s = scripted();
    r = await applyUpdate(s.runner, v, planUpdate(v, facts()), { restart: "always", clock, configPath: join(tmpdir(), "aivm-none.toml") });
    expect(r.restarted).toBe(true);
  });

  test("a disk grow on a running VM needs no restart, and tries to grow the guest filesystem", async () => {
    const { runner, fake } = scripted();
    const v = vm({ disk_gib: 10 });
    const r = await applyUpdate(runner, v, planUpdate(v, facts()), { restart: "auto", clock, configPath: join(tmpdir(), "aivm-none.toml") });
    expect(r).toMatchObject({ applied: ["disk"], restarted: false, restartPending: false, fsGrown: false });
    expect(fake.commands()).toContain("virsh -q -c qemu:///system blockresize box vda 10G");
  });

  test("shrink: UsageError (exit 2) before anything runs", async () => {
    const { runner, fake } = scripted();
    const v = vm({ disk_gib: 2 });
    const e = await applyUpdate(runner, v, planUpdate(v, facts()), { restart: "auto", clock, configPath: join(tmpdir(), "aivm-none.toml") }).catch((x) => x);
    expect(e).toBeInstanceOf(UsageError);
    expect(e.exitCode).toBe(EXIT.USAGE);
    expect(fake.calls).toEqual([]);
  });

  test("--dry-run prints the commands (and the restart with --yes), runs nothing that changes", async () => {
    const { runner, fake, printed } = fakeRunner({ dryRun: true, yes: true });
    const v = vm({ cpus: 3, disk_gib: 9 });
    await applyUpdate(runner, v, planUpdate(v, facts()), { restart: "auto", clock, configPath: join(tmpdir(), "aivm-none.toml") });
    expect(fake.calls).toEqual([]);
    expect(printed.join("\n")).toContain("virsh -q -c qemu:///system setvcpus box 3 --config --maximum");
    expect(printed.join("\n")).toContain("virsh -q -c qemu:///system blockresize box vda 9G");
    expect(printed.join("\n")).toContain("virsh -q -c qemu:///system shutdown box --mode acpi");
  });
});

describe("updateFacts", () => {
  test("reads state, both definitions, the disk capacity and the firewall", async () => {
    const { runner, fake } = fakeRunner();
    const v = vm();
    fake.on([...V, "domstate", "box"], { stdout: "running\n" });
    fake.on([...V, "dumpxml", "--inactive", "box"], { stdout: xml({ vcpus: 4 }) });
    fake.on([...V, "dumpxml", "box"], { stdout: xml() });
    fake.on([...V, "domblkinfo", "box", "--all"], { stdout: ` vda ${8 * GIB} 1 1\n` });
    fake.on(["nft", "list", "table"], { stdout: expectedTable(v.network).join("\n") });
    const f = await updateFacts(runner, v);
    expect(f).toMatchObject({ state: "running", diskBytes: 8 * GIB, fw: { equal: true } });
    expect([f.persistent.vcpus, f.live!.vcpus]).toEqual([4, 2]);
  });

  test("a VM that is not created: exit 1", async () => {
    const { runner, fake } = fakeRunner();
    fake.on([...V, "domstate", "box"], { exitCode: 1, stderr: "error: failed to get domain 'box'\n" });
    await expect(updateFacts(runner, vm())).rejects.toThrow("not created");
  });
});
