// `aivm config discover`: summaries of unmanaged domains, per-domain import or skip, the records written.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runMain } from "./helpers/main.ts";
import { FakeBackend, fakeRunner } from "./helpers/fake-runner.ts";
import { inject } from "../lib/cli/_shared.ts";
import { GIB, parseDhcpRange } from "../lib/libvirt/parse.ts";
import type { StoreDoc } from "../lib/config/model.ts";
import { discover, formatSummary, planImport, summarize, type LiveNetwork } from "../lib/flows/discover.ts";
import { resolveVm } from "../lib/config/resolve.ts";
import { Runner } from "../lib/run.ts";
import { loadStore } from "../lib/config/store.ts";

const URI = "qemu:///system";
const V = ["virsh", "-q", "-c", URI];
let root: string;
beforeEach(() => { root = mkdtempSync(join(tmpdir(), "aivm-discover-")); });
afterEach(() => { rmSync(root, { recursive: true, force: true }); delete inject.runner; });

const DEFAULT_NET = `<network><name>default</name><forward mode='nat'/><bridge name='virbr0' stp='on' delay='0'/>
<ip address='192.168.122.1' netmask='255.255.255.0'><dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp></ip></network>`;

function domain(name: string, o: { net?: string; bridge?: boolean; vcpus?: number; memKib?: number } = {}): string {
  const iface = o.bridge
    ? `<interface type='bridge'><mac address='52:54:00:00:00:02'/><source bridge='br0'/></interface>`
    : `<interface type='network'><mac address='52:54:00:00:00:01'/><source network='${o.net ?? "default"}'/></interface>`;
  return `<domain type='kvm'><name>${name}</name><memory unit='KiB'>${o.memKib ?? 1048576}</memory><vcpu placement='static'>${o.vcpus ?? 1}</vcpu>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/images/${name}.qcow2'/><target dev='vda' bus='virtio'/></disk>
<disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='sda' bus='sata'/><readonly/></disk>${iface}</devices></domain>`;
}

/** libvirt with: box (managed), web (on default), Odd_Name, bridged (on br0). */
function script(fake: FakeBackend): void {
  fake.on([...V, "list", "--all", "--name"], { stdout: "box\nweb\nOdd_Name\nbridged\n\n" });
  for (const [n, x] of [["web", domain("web", { vcpus: 2, memKib: 2097152 })], ["Odd_Name", domain("Odd_Name")], ["bridged", domain("bridged", { bridge: true })]] as const) {
    fake.on([...V, "dominfo", n], { stdout: `Id: -\nName: ${n}\nState: shut off\nCPU(s): 1\nMax memory: 1048576 KiB\nAutostart: disable\n` });
    fake.on([...V, "dumpxml", "--inactive", n], { stdout: x });
    fake.on([...V, "domblkinfo", n, "vda"], { stdout: `Capacity: ${Math.round(10.5 * GIB)}\n` });
  }
  fake.on([...V, "dominfo", "web"], { stdout: "State: running\nCPU(s): 2\nMax memory: 2097152 KiB\nAutostart: enable\n" });
  fake.on([...V, "net-dumpxml", "default"], { stdout: DEFAULT_NET });
}

const store = (): StoreDoc => ({ networks: [{ name: "aivm-net", subnet: "10.77.0.0/24" }], vms: [{ name: "box", network: "aivm-net" }] });

describe("summaries and plans", () => {
  test("summarize: state, vCPUs, memory, networks, disks, capacity", async () => {
    const { runner, fake } = fakeRunner();
    script(fake);
    const s = await summarize(runner, URI, "web");
    expect(s).toMatchObject({ name: "web", state: "running", autostart: true, vcpus: 2, memoryMib: 2048, networks: ["default"], diskBytes: Math.round(10.5 * GIB) });
    expect(formatSummary(s)).toBe([
      "web: running, autostart",
      "  2 vCPUs, 2048 MiB, disk 10.5 GiB",
      "  network: default",
      "  disks: vda=/var/lib/libvirt/images/web.qcow2",
    ].join("\n"));
  });

  test("planImport: an imported VM record and its network with the firewall off; the store stays valid", async () => {
    const { runner, fake } = fakeRunner();
    script(fake);
    const s = await summarize(runner, URI, "web");
    const live: LiveNetwork = { name: "default", bridge: "virbr0", subnet: "192.168.122.0/24", gateway: "192.168.122.1", dhcpStart: "192.168.122.2", dhcpEnd: "192.168.122.254" };
    const p = planImport(store(), s, new Map([["default", live]]));
    expect(p).toEqual({
      name: "web",
      vm: { name: "web", network: "default", cpus: 2, memory_mib: 2048, disk_gib: 11, imported: true },
      network: { name: "default", bridge: "virbr0", subnet: "192.168.122.0/24", gateway: "192.168.122.1", dhcp_start: "192.168.122.2", dhcp_end: "192.168.122.254", firewall: { enabled: false } },
    });
  });

  test("planImport skips: an invalid name, no libvirt network, a network without IPv4", async () => {
    const { runner, fake } = fakeRunner();
    script(fake);
    const nets = new Map<string, LiveNetwork | null>([["default", { name: "default", bridge: "virbr0" }]]);
    expect(planImport(store(), await summarize(runner, URI, "Odd_Name"), nets).skip).toContain("not a valid aivm VM name");
    expect(planImport(store(), await summarize(runner, URI, "bridged"), nets).skip).toContain("not on a libvirt network (bridge br0)");
    expect(planImport(store(), await summarize(runner, URI, "web"), nets).skip).toContain("no IPv4 subnet");
  });

  test("parseDhcpRange", () => {
    expect(parseDhcpRange(DEFAULT_NET)).toEqual({ start: "192.168.122.2", end: "192.168.122.254" });
    expect(parseDhcpRange("<network/>")).toEqual({ start: undefined, end: undefined });
  });
});

describe("discover", () => {
  const run = async (o: { yes?: boolean; interactive?: boolean; answers?: string[] }) => {
    const answers = [...(o.answers ?? [])];
    const { runner, fake } = fakeRunner({ yes: !!o.yes, interactive: !!o.interactive, ask: async () => answers.shift() ?? "n" });
    script(fake);
    const printed: string[] = [];
    let saved: StoreDoc | null = null;
    const r = await discover(runner, URI, store(), { print: (t) => printed.push(t), save: (ch) => { saved = ch(store()); } });
    return { r, printed, saved: saved as StoreDoc | null };
  };

  test("no terminal and no --yes: lists everything, imports nothing, says why", async () => {
    const { r, printed, saved } = await run({});
    expect(r.found).toEqual(["web", "Odd_Name", "bridged"]);
    expect(r.listedOnly).toBe(true);
    expect(r.imported).toEqual([]);
    expect(saved).toBeNull();
    expect(printed.length).toBe(3);
    expect(printed[1]).toContain("cannot import: its name is not a valid aivm VM name");
    expect(r.skipped.find((s) => s.name === "web")!.why).toContain("no terminal");
  });

  test("--yes imports every importable domain; the resulting store resolves the VM as imported", async () => {
    const { r, saved } = await run({ yes: true });
    expect(r.imported).toEqual(["web"]);
    expect(r.skipped.map((s) => s.name)).toEqual(["Odd_Name", "bridged"]);
    expect(saved!.vms!.map((v) => v.name)).toEqual(["box", "web"]);
    expect(saved!.networks!.map((n) => n.name)).toEqual(["aivm-net", "default"]);
    const vm = resolveVm(saved!, "web");
    expect(vm).toMatchObject({ imported: true, cpus: 2, memoryMib: 2048, diskGib: 11, network: { name: "default", bridge: "virbr0", firewall: { enabled: false } } });
  });

  test("asked per domain: declining imports nothing", async () => {
    const { r, saved } = await run({ interactive: true, answers: ["n"] });
    expect(r.imported).toEqual([]);
    expect(r.skipped.find((s) => s.name === "web")!.why).toBe("declined");
    expect(saved).toBeNull();
  });
});

describe("aivm config discover (CLI)", () => {
  const cli = (...argv: string[]) => runMain([...argv, "--config", join(root, "config.toml")]);


  test("--yes writes imported = true and the network with the firewall off; a second run finds nothing new", async () => {
    const cfg = join(root, "config.toml");
    writeFileSync(cfg, `[[networks]]\nname = "aivm-net"\nsubnet = "10.77.0.0/24"\n\n[[vms]]\nname = "box"\nnetwork = "aivm-net"\n`);
    const fake = new FakeBackend();
    script(fake);
    inject.runner = ({ dryRun, yes }) => new Runner(fake, { isRoot: true, interactive: false, dryRun, yes });
    const r = await cli("config", "discover", "--yes");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("web: running, autostart");
    expect(r.stderr).toContain("discovered 3, imported 1 (web), skipped 2");
    const text = readFileSync(cfg, "utf8");
    expect(text).toContain("imported = true");
    expect(loadStore(cfg).doc.networks![1]).toMatchObject({ name: "default", firewall: { enabled: false } });
    fake.on([...V, "list", "--all", "--name"], { stdout: "box\nweb\n" });
    const again = await cli("config", "discover", "--yes");
    expect(again.stderr).toContain("no libvirt domains outside the config store");
  });

  test("without a terminal and without --yes: exit 0, nothing written", async () => {
    const cfg = join(root, "config.toml");
    writeFileSync(cfg, `[[networks]]\nname = "aivm-net"\nsubnet = "10.77.0.0/24"\n\n[[vms]]\nname = "box"\nnetwork = "aivm-net"\n`);
    const before = readFileSync(cfg, "utf8");
    const fake = new FakeBackend();
    script(fake);
    inject.runner = ({ dryRun, yes }) => new Runner(fake, { isRoot: true, interactive: false, dryRun, yes });
    const r = await cli("config", "discover");
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("listed only, nothing imported");
    expect(readFileSync(cfg, "utf8")).toBe(before);
  });
});
