// `aivm status`: the layer table (true / false / unknown-with-reason), the JSON shape, the next commands.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fakeRunner, testHost, type FakeBackend } from "./helpers/fake-runner.ts";
import type { Host } from "../lib/host.ts";
import { collectStatus, virtiofsdFiles } from "../lib/flows/status.ts";
import type { StoreDoc } from "../lib/config/model.ts";
import { ROOT_TAG } from "../lib/share/names.ts";
import { macAddress } from "../lib/domain.ts";
import { resolveVm } from "../lib/config/resolve.ts";
import { renderNetworkXml } from "../lib/net.ts";
import { expectedTable, renderRuleset } from "../lib/fw.ts";
import { attachmentVerdicts, formatStatus, LAYERS, nextCommands, StatusReport } from "../lib/status-report.ts";
import { vmFiles } from "../lib/vm/files.ts";
import { parseDomainXml } from "../lib/libvirt/parse.ts";

const URI = "qemu:///system";
const V = ["virsh", "-q", "-c", URI];
const SHA = "c".repeat(64);
const IP = "10.77.0.123";
let root: string;
let savedXdg: string | undefined;

/** Every program found (but `missing`), no KVM: the host a status test sees. */
const statusHost = (o: { missing?: string } = {}): Host => testHost({ which: (n) => (n === o.missing ? null : `/usr/bin/${n}`) });

/** What the one guest-side ssh session prints: cloud-init's state, then one line per attachment. */
const probeReply = (o: { ci?: string; att?: string } = {}) => ({ stdout: `@cloud-init\n${o.ci ?? 'result\n{"v1": {"datasource": "NoCloud", "errors": []}}'}\n@attachments\n${o.att ?? ""}` });

function doc(o: { vms?: boolean; attachments?: StoreDoc["vms"] extends (infer V)[] | undefined ? V extends { attachments?: infer A } ? A : never : never } = {}): StoreDoc {
  return {
    defaults: {
      vm: { name: "box", cpus: 2, memory_mib: 2048, disk_gib: 8, accel: "auto" },
      image: { url: "file:///base.qcow2", sha256: SHA },
      paths: { vm_root: join(root, "vms"), image_cache: join(root, "images"), ssh_identity: join(root, "id"), libvirt_uri: URI },
    },
    ...(o.vms === false ? {} : { networks: [{ name: "aivm-net", subnet: "10.77.0.0/24" }], vms: [{ name: "box", network: "aivm-net", ...(o.attachments ? { attachments: o.attachments } : {}) }] }),
  };
}

export function domXml(o: { vcpus?: number; current?: number; memMib?: number; fs?: { source: string; tag?: string; ro?: boolean }[] } = {}): string {
  const cur = o.current !== undefined ? ` current='${o.current}'` : "";
  const fs = (o.fs ?? [{ source: join(root, "vms/box/export"), tag: ROOT_TAG }]).map((f) => `<filesystem type='mount' accessmode='passthrough'><driver type='virtiofs'/><source dir='${f.source}'/><target dir='${f.tag ?? "t0"}'/>${f.ro ? "<readonly/>" : ""}</filesystem>`).join("\n");
  return `<domain type='qemu'>
  <name>box</name>
  <memory unit='KiB'>${(o.memMib ?? 2048) * 1024}</memory>
  <currentMemory unit='KiB'>${(o.memMib ?? 2048) * 1024}</currentMemory>
  <vcpu placement='static'${cur}>${o.vcpus ?? 2}</vcpu>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${join(root, "vms/box/disk.qcow2")}'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${join(root, "vms/box/seed.img")}'/><target dev='vdb' bus='virtio'/><readonly/></disk>
    <interface type='network'><mac address='${macAddress("box")}'/><source network='aivm-net'/><model type='virtio'/></interface>
    ${fs}
  </devices>
</domain>`;
}

/** A healthy VM: every probe answers yes. Tests override single replies (later rules win). */
function healthy(fake: FakeBackend, d: StoreDoc): void {
  const vm = resolveVm(d);
  fake.on([...V, "version", "--daemon"], { stdout: "Running against daemon: 9.0.0\n" });
  fake.on([...V, "net-info", "aivm-net"], { stdout: `Name: aivm-net\nActive: yes\nPersistent: yes\nAutostart: yes\nBridge: ${vm.network.bridge}\n` });
  fake.on([...V, "net-dumpxml", "aivm-net"], { stdout: renderNetworkXml(vm.network) });
  fake.on(["nft", "list", "table"], { stdout: expectedTable(vm.network).join("\n") });
  fake.on([...V, "domstate", "box"], { stdout: "running\n" });
  fake.on([...V, "dumpxml"], { stdout: domXml() });
  fake.on([...V, "domblkinfo", "box", "--all"], { stdout: ` vda   ${8 * 1024 ** 3}   1   1\n vdb   1000   1000   1000\n` });
  fake.on([...V, "net-dhcp-leases"], { stdout: ` Expiry Time           MAC address         Protocol   IP address          Hostname   Client ID or DUID\n---\n 2030-01-01 00:00:00   ${macAddress("box")}   ipv4       ${IP}/24      box        -\n` });
  fake.on((a) => a[0] === "ssh", probeReply());
}

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "aivm-status-"));
  mkdirSync(join(root, "images"), { recursive: true });
  writeFileSync(join(root, "images", `${SHA}.img`), "image");
  writeFileSync(join(root, "images", `${SHA}.json`), JSON.stringify({ sha256: SHA, format: "qcow2", source: "file:///base.qcow2", created: "2026-01-01T00:00:00Z" }));
  mkdirSync(join(root, "vms", "box"), { recursive: true });
  writeFileSync(join(root, "vms", "box", "known_hosts"), "box ssh-ed25519 AAAA\n");
  savedXdg = process.env.XDG_CONFIG_HOME;
  process.env.XDG_CONFIG_HOME = root; // the default store path: next commands carry no --config
  mkdirSync(join(root, "aivm"));
  writeFileSync(join(root, "aivm", "config.toml"), "");
});
afterEach(() => {
  rmSync(root, { recursive: true, force: true });
  if (savedXdg === undefined) delete process.env.XDG_CONFIG_HOME;
  else process.env.XDG_CONFIG_HOME = savedXdg;
});

async function status(d: StoreDoc, script: (fake: FakeBackend) => void = () => {}, o: { host?: Host; hash?: string; detail?: boolean; configPath?: string } = {}): Promise<StatusReport> {
  const { runner, fake } = fakeRunner({ host: o.host ?? statusHost() });
  healthy(fake, d);
  script(fake);
  const configPath = o.configPath ?? join(root, "aivm", "config.toml");
  return collectStatus(runner, d, { configPath, hash: async () => o.hash ?? SHA, detail: o.detail });
}

const row = (r: StatusReport, name: string) => r.layers.find((l) => l.name === name)!;
const table = (r: StatusReport) => Object.fromEntries(r.layers.map((l) => [l.name, l.ok]));

describe("the layer table", () => {
  test("a healthy VM: every layer true, ok, nothing to run", async () => {
    const r = await status(doc());
    expect(r.layers.map((l) => l.name)).toEqual([...LAYERS]);
    expect(r.layers.filter((l) => l.ok !== true)).toEqual([]);
    expect(r).toMatchObject({ vm: "box", recorded: true, ok: true, next: [] });
    expect(row(r, "acceleration").detail).toContain("TCG fallback");
    expect(row(r, "image").detail).toContain("not re-hashed");
    expect(row(r, "ip").detail).toBe(IP);
  });

  test("the JSON shape (snapshot; paths normalized)", async () => {
    const r = await status(doc(), (f) => {
      f.on(["nft", "list", "table"], { exitCode: 1, stderr: "Error: No such file or directory\n" });
      f.on((a) => a[0] === "ssh", { exitCode: 255, stderr: "Connection reset\n" });
    });
    expect(JSON.parse(JSON.stringify(r).replaceAll(root, "<root>"))).toMatchSnapshot();
  });

  test("libvirtd unreachable: libvirtd false, the layers behind it unknown with the reason, never false", async () => {
    const r = await status(doc(), (f) => f.on(["virsh"], { exitCode: 1, stderr: "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory\n" }));
    expect(table(r)).toMatchObject({ libvirtd: false, network: null, vm: null, ip: null, ssh: null, "cloud-init": null, drift: null, firewall: true, image: true });
    expect(row(r, "network").reason).toContain("libvirtd is not reachable");
    expect(row(r, "ip").reason).toContain("libvirtd is not reachable");
    expect(r.next).toEqual(["start libvirtd and virtlogd (`aivm doctor` checks the host)"]);
    expect(r.ok).toBe(false);
  });

  test("firewall table absent: false, next is `aivm fw apply <network>`", async () => {
    const r = await status(doc(), (f) => f.on(["nft", "list", "table"], { exitCode: 1, stderr: "Error: No such file or directory; did you mean table 'x'?\n" }));
    expect(row(r, "firewall")).toMatchObject({ ok: false, next: "aivm fw apply aivm-net" });
    expect(row(r, "firewall").detail).toContain("absent");
    expect(r.next).toEqual(["aivm fw apply aivm-net"]);
  });

  test("firewall unreadable (no permission): unknown with the reason, not false", async () => {
    const r = await status(doc(), (f) => f.on(["nft", "list", "table"], { exitCode: 1, stderr: "Error: Operation not permitted\n" }));
    expect(row(r, "firewall").ok).toBeNull();
    expect(row(r, "firewall").reason).toContain("Operation not permitted");
    expect(r.next).toEqual([]);
  });

  test("a rule differs: false with the difference as evidence under --detail", async () => {
    const d = doc();
    const r = await status(d, (f) => f.on(["nft", "list", "table"], { stdout: expectedTable(resolveVm(d).network).filter((l) => !l.includes("drop")).join("\n") }), { detail: true });
    expect(row(r, "firewall").ok).toBe(false);
    expect(row(r, "firewall").evidence!.some((e) => e.startsWith("missing:"))).toBe(true);
  });

  test("network inactive: false, next `aivm net create`", async () => {
    const r = await status(doc(), (f) => f.on([...V, "net-info"], { stdout: "Name: aivm-net\nActive: no\nPersistent: yes\nAutostart: yes\n" }));
    expect(row(r, "network")).toMatchObject({ ok: false, next: "aivm net create aivm-net" });
    expect(row(r, "network").detail).toContain("not active");
  });

  test("the VM shut off: vm false (`aivm vm up`), ip/ssh/cloud-init unknown because it is not running", async () => {
    const r = await status(doc(), (f) => f.on([...V, "domstate"], { stdout: "shut off\n" }));
    expect(table(r)).toMatchObject({ vm: false, ip: null, ssh: null, "cloud-init": null, drift: true });
    expect(row(r, "ip").reason).toBe("the VM is shut off");
    expect(r.next).toEqual(["aivm vm up"]);
  });

  test("the VM not created: vm false (`aivm vm create`), drift unknown", async () => {
    const r = await status(doc(), (f) => f.on([...V, "domstate"], { exitCode: 1, stderr: "error: failed to get domain 'box'\n" }));
    expect(row(r, "vm")).toMatchObject({ ok: false, next: "aivm vm create" });
    expect(row(r, "drift")).toMatchObject({ ok: null, reason: "the VM is not created" });
  });

  test("no lease yet: ip false (`aivm vm wait`), ssh unknown", async () => {
    const r = await status(doc(), (f) => {
      f.on([...V, "net-dhcp-leases"], { stdout: "" });
      f.on([...V, "domifaddr"], { stdout: "" });
    });
    expect(row(r, "ip")).toMatchObject({ ok: false, next: "aivm vm wait" });
    expect(row(r, "ssh")).toMatchObject({ ok: null, reason: "no IP address" });
  });

  test("ssh refuses the host key: ssh false, cloud-init and attachments unknown", async () => {
    const r = await status(doc(), (f) => f.on((a) => a[0] === "ssh", { exitCode: 255, stderr: "Host key verification failed.\n" }));
    expect(row(r, "ssh").ok).toBe(false);
    expect(row(r, "ssh").next).toContain("not the pinned one");
    expect(row(r, "cloud-init")).toMatchObject({ ok: null, reason: "SSH does not answer" });
  });

  test("a Host entry above aivm's block in ~/.ssh/config overrides it: ssh false, naming the fix", async () => {
    const sshDir = join(process.env.HOME!, ".ssh");
    mkdirSync(sshDir, { recursive: true });
    writeFileSync(join(sshDir, "config"), "Host box\n  HostName 10.9.9.9\n");
    try {
      const r = await status(doc(), (f) => f.on(["ssh", "-G"], { stdout: `hostname 10.9.9.9\nuser agent\nstricthostkeychecking true\nhostkeyalias box\nuserknownhostsfile ${join(root, "vms/box/known_hosts")}\n` }));
      expect(row(r, "ssh")).toMatchObject({ ok: false, next: expect.stringContaining("must come before any entry that matches box") });
      expect(row(r, "ssh").detail).toContain("HostName is 10.9.9.9, not 10.77.0.123");
    } finally {
      rmSync(join(sshDir, "config"));
    }
  });

  test("no pinned host key: ssh unknown (not tried), not false", async () => {
    rmSync(vmFiles(resolveVm(doc())).knownHosts);
    const r = await status(doc());
    expect(row(r, "ssh").ok).toBeNull();
    expect(row(r, "ssh").reason).toContain("known_hosts is missing");
  });

  test("cloud-init still running: false, `aivm vm wait`", async () => {
    const r = await status(doc(), (f) => f.on((a) => a[0] === "ssh", probeReply({ ci: "running" })));
    expect(row(r, "cloud-init")).toMatchObject({ ok: false, next: "aivm vm wait" });
  });

  test("drift: vCPUs differ in the definition -> `aivm vm update`; only in the running domain -> `aivm vm restart`", async () => {
    let r = await status(doc(), (f) => f.on([...V, "dumpxml"], { stdout: domXml({ vcpus: 4 }) }));
    expect(row(r, "drift")).toMatchObject({ ok: false, next: "aivm vm update" });
    expect(row(r, "drift").detail).toBe("vCPUs are 4, config says 2");
    r = await status(doc(), (f) => f.on([...V, "dumpxml", "box"], { stdout: domXml({ vcpus: 3 }) }));
    expect(row(r, "drift")).toMatchObject({ ok: false, next: "aivm vm restart" });
    expect(row(r, "drift").detail).toContain("next restart");
  });

  test("drift: disk smaller than disk_gib, and a virtiofs device no attachment explains", async () => {
    const r = await status(doc(), (f) => {
      f.on([...V, "domblkinfo"], { stdout: ` vda ${6 * 1024 ** 3} 1 1\n` });
      f.on([...V, "dumpxml"], { stdout: domXml({ fs: [{ source: "/srv/x" }] }) });
    });
    expect(row(r, "drift").detail).toBe(`disk is 6 GiB, config says 8 GiB; no virtiofs device ${ROOT_TAG} for ${join(root, "vms/box/export")}; virtiofs device t0 (/srv/x) matches no attachment`);
  });

  test("the base image not cached: false, `aivm image fetch`; --detail re-hashes and a mismatch is false", async () => {
    let r = await status(doc(), () => rmSync(join(root, "images", `${SHA}.img`)));
    expect(row(r, "image")).toMatchObject({ ok: false, next: "aivm image fetch" });
    writeFileSync(join(root, "images", `${SHA}.img`), "image");
    r = await status(doc(), () => {}, { detail: true, hash: "d".repeat(64) });
    expect(row(r, "image")).toMatchObject({ ok: false, next: "aivm image verify" });
    r = await status(doc(), () => {}, { detail: true });
    expect(row(r, "image").detail).toContain("sha256 verified");
  });

  test("host dependencies missing and explicit kvm without KVM: false with fixes", async () => {
    const d = doc();
    d.defaults!.vm!.accel = "kvm";
    const r = await status(d, () => {}, { host: statusHost({ missing: "nft" }) });
    expect(row(r, "host-dependencies")).toMatchObject({ ok: false, detail: "missing: nft", next: "aivm host install-deps" });
    expect(row(r, "acceleration").ok).toBe(false);
    expect(r.next[0]).toBe("aivm host install-deps");
  });

  test("attachments: probed in the guest; a wrong access is false", async () => {
    const atts = [
      { host_path: "/src/a", mode: "shared-root" as const, access: "ro" as const, guest_dst: "/src/a" },
      { host_path: "/src/b b", mode: "git" as const, access: "rw" as const, guest_dst: "/src/b b" },
    ];
    const r = await status(doc({ attachments: atts }), (f) => {
      f.on((a) => a[0] === "ssh", probeReply({ att: "0 mounted rw,relatime\n1 ok git\n" }));
    });
    expect(row(r, "attachments").ok).toBe(false);
    expect(row(r, "attachments").detail).toContain("mounted read-write, should be read-only");
    expect(row(r, "drift").ok).toBe(true);
  });
});

describe("without a VM in the store", () => {
  test("host-level layers, the VM layers unknown, and what to run first", async () => {
    const r = await status(doc({ vms: false }), (f) => {
      f.on([...V, "net-info"], { exitCode: 1, stderr: "error: failed to get network 'aivm-net'\nerror: Network not found: no network with matching name 'aivm-net'\n" });
      f.on(["nft", "list", "table"], { exitCode: 1, stderr: "Error: No such file or directory\n" });
    }, { configPath: join(root, "missing.toml") });
    expect(r.vm).toBeNull();
    expect(table(r)).toMatchObject({ network: false, firewall: false, vm: false, ip: null, ssh: null, drift: null });
    expect(row(r, "ip").reason).toBe("no VM in the config store");
    expect(r.next).toEqual([`aivm config init --config ${join(root, "missing.toml")}`, `aivm up --config ${join(root, "missing.toml")}`]);
    const text = formatStatus(r);
    expect(text).toStartWith("no VM in the config store: host-level checks only");
    expect(text).not.toMatch(/^ssh /m);
  });
});

describe("text and next commands", () => {
  test("one line per layer with true/false/unknown, then next", async () => {
    const r = await status(doc(), (f) => {
      f.on(["nft", "list", "table"], { exitCode: 1, stderr: "Error: No such file or directory\n" });
      f.on((a) => a[0] === "ssh", { exitCode: 255, stderr: "ssh: connect to host 10.77.0.123 port 22: Connection timed out\n" });
    });
    const text = formatStatus(r);
    expect(text).toMatch(/^firewall\s+false\s+inet aivm_aivm_net is absent$/m);
    expect(text).toMatch(/^ssh\s+false\s+agent@10\.77\.0\.123: ssh: connect to host 10\.77\.0\.123 port 22: Connection timed out$/m);
    expect(text).toMatch(/^cloud-init\s+unknown\s+not checked \(SSH does not answer\)$/m);
    expect(text).toEndWith("next:\n  aivm fw apply aivm-net\n  aivm vm wait");
  });

  test("--config is added to aivm commands (both halves of a &&), other hints unchanged, no repeats", () => {
    const layers = [
      { name: "network" as const, ok: false as const, detail: "", next: "aivm net destroy n && aivm net create n" },
      { name: "firewall" as const, ok: false as const, detail: "", next: "aivm fw apply n" },
      { name: "libvirtd" as const, ok: false as const, detail: "", next: "start libvirtd" },
      { name: "image" as const, ok: null, detail: "", reason: "x", next: "aivm image fetch" },
      { name: "vm" as const, ok: false as const, detail: "", next: "aivm fw apply n" },
    ];
    expect(nextCommands(layers, "/c/my config.toml", true)).toEqual([
      "aivm net destroy --config '/c/my config.toml' n && aivm net create --config '/c/my config.toml' n",
      "aivm fw apply --config '/c/my config.toml' n",
      "start libvirtd",
    ]);
  });
});

describe("virtiofsd's open files (status --detail), read from /proc through the Host", () => {
  test("each virtiofsd serving the VM (export root, shared folders), its open files and limit; others ignored", () => {
    const proc = mkdtempSync(join(tmpdir(), "aivm-proc-"));
    const v = { ...resolveVm({ defaults: { vm: { name: "box" }, paths: { vm_root: "/srv/my vms" } } }), attachments: [{ host_path: "/src/a b", mode: "shared" as const, access: "rw" as const, guest_dst: "/g" }] };
    const p = (pid: number, argv: string[], fds: number | null, limit = 1024) => {
      mkdirSync(join(proc, String(pid)), { recursive: true });
      writeFileSync(join(proc, String(pid), "cmdline"), argv.join("\0") + "\0");
      writeFileSync(join(proc, String(pid), "limits"), `Limit                     Soft Limit           Hard Limit           Units\nMax open files            ${limit}                 ${limit * 4}                 files\n`);
      if (fds !== null) {
        mkdirSync(join(proc, String(pid), "fd"));
        for (let i = 0; i < fds; i++) writeFileSync(join(proc, String(pid), "fd", String(i)), "");
      }
    };
    p(101, ["/usr/lib/qemu/virtiofsd", "--fd=33", "-o", "source=/srv/my vms/box/export,xattr,flock"], 7);
    p(102, ["/usr/lib/qemu/virtiofsd", "--fd=34", "-o", "source=/src/a b"], null);
    p(103, ["/usr/lib/qemu/virtiofsd", "--fd=35", "-o", "source=/srv/my vms/other/export"], 3);
    p(104, ["/usr/bin/sleep", "source=/srv/my vms/box/export"], 1);
    const files = virtiofsdFiles(testHost(), v, proc).sort((a, b) => a.pid - b.pid);
    expect(files).toEqual([
      { pid: 101, source: "/srv/my vms/box/export", open: 7, limit: 1024 },
      { pid: 102, source: "/src/a b", open: null, limit: 1024 },
    ]);
    rmSync(proc, { recursive: true, force: true });
  });
});

describe("pure parts", () => {
  test("parseDomainXml: vcpu current/max, memory units, disks, interfaces, filesystems", () => {
    const d = parseDomainXml(domXml({ vcpus: 4, current: 2, fs: [{ source: "/a&amp;b", ro: true }] }).replace("unit='KiB'>2097152<", "unit='MiB'>2048<"));
    expect(d).toMatchObject({ vcpus: 2, maxVcpus: 4, memoryKib: 2097152 });
    expect(d.disks.map((x) => [x.target, x.format, x.readonly])).toEqual([["vda", "qcow2", false], ["vdb", "raw", true]]);
    expect(d.interfaces).toEqual([{ type: "network", network: "aivm-net", bridge: undefined, mac: macAddress("box") }]);
    expect(d.filesystems).toEqual([{ driver: "virtiofs", source: "/a&b", target: "t0", readonly: true }]);
  });

  test("attachmentVerdicts: mounted ro/rw against access, missing, git clone, no answer", () => {
    const a = (mode: "shared" | "git", access: "ro" | "rw") => ({ host_path: "/h", mode, access, guest_dst: "/g" });
    const v = attachmentVerdicts([a("shared", "ro"), a("shared", "rw"), a("shared", "rw"), a("git", "rw"), a("shared", "ro")], "0 mounted ro,nosuid\n1 mounted rw\n2 missing\n3 missing git\n");
    expect(v.map((x) => x.ok)).toEqual([true, true, false, false, false]);
    expect(v[4]!.text).toContain("no answer");
  });

  test("the rendered ruleset's table is what a healthy firewall lists", () => {
    const vm = resolveVm(doc());
    expect(renderRuleset(vm.network)).toContain(`table inet aivm_aivm_net`);
  });
});
