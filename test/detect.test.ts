// Host detection for `config init`: route parsing, subnet choice, resource tiers, SSH identity, the defaults document.
import { describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fakeRunner } from "./helpers/fake-runner.ts";
import { chooseSubnet, cpuTier, createIdentity, defaultsDoc, detectFrom, diskTier, findIdentity, memoryTier, nearestExisting, readHostFacts, routeCidrs, sshKeygenArgv, SUBNET_CANDIDATES, tildePath, type DetectFacts } from "../lib/detect.ts";
import { intToIpv4, parseCidr } from "../lib/validate.ts";
import { UBUNTU_2404 } from "../lib/config/model.ts";
import { renderToml } from "../lib/config/toml.ts";
import { parseStore } from "../lib/config/store.ts";

const GiB = 1024 ** 3;
const show = (text: string) => routeCidrs(text).map((c) => `${intToIpv4(c.network)}/${c.prefix}`);

describe("routeCidrs", () => {
  test.each([
    ["default via 192.168.1.1 dev eth0 proto dhcp metric 100", []],
    ["10.0.0.0/8 dev eth0 proto kernel scope link src 10.1.2.3", ["10.0.0.0/8"]],
    ["192.168.122.0/24 dev virbr0 proto kernel scope link src 192.168.122.1 linkdown", ["192.168.122.0/24"]],
    ["172.17.0.0/16 dev docker0 proto kernel scope link src 172.17.0.1", ["172.17.0.0/16"]],
    ["100.64.0.7 dev tailscale0 scope link", ["100.64.0.7/32"]],
    ["blackhole 10.99.0.0/16", ["10.99.0.0/16"]],
    ["unreachable 10.98.0.0/16 metric 1024", ["10.98.0.0/16"]],
    ["10.5.0.9/16 dev x", ["10.5.0.0/16"]],
    ["", []],
    ["garbage line here", []],
    ["fe80::/64 dev eth0", []],
  ])("%p", (line, expected) => {
    expect(show(line)).toEqual(expected);
  });

  test("a whole table, default routes skipped", () => {
    const text = [
      "default via 10.0.2.2 dev eth0",
      "default via 10.0.3.2 dev eth1 metric 200",
      "10.0.2.0/24 dev eth0 proto kernel scope link src 10.0.2.15",
      "10.77.0.0/24 dev aivm-1 proto kernel scope link src 10.77.0.1",
      "",
    ].join("\n");
    expect(show(text)).toEqual(["10.0.2.0/24", "10.77.0.0/24"]);
  });
});

describe("chooseSubnet", () => {
  const r = (t: string) => routeCidrs(t);
  test.each([
    ["no routes", "", [], "10.77.0.0/24"],
    ["10.77 in use", "10.77.0.0/24 dev br0", [], "10.78.0.0/24"],
    ["a wide route covers 10.77-10.79", "10.76.0.0/14 dev wg0", [], "10.80.0.0/24"],
    ["a host route inside 10.77.0.0/24", "10.77.0.200 dev tun0", [], "10.78.0.0/24"],
    ["stored networks count", "10.77.0.0/24 dev br0", ["10.78.0.0/24", "10.79.0.0/16"], "10.80.0.0/24"],
    ["the default route does not block everything", "default via 10.0.0.1 dev eth0", [], "10.77.0.0/24"],
    ["all of 10/8 taken: 192.168.177.0/24", "10.0.0.0/8 dev eth0", [], "192.168.177.0/24"],
    ["10/8 and 192.168.177-178 taken", "10.0.0.0/8 dev eth0\n192.168.176.0/23 dev x\n192.168.178.0/24 dev y", [], "192.168.179.0/24"],
  ])("%s", (_, routes, taken, expected) => {
    expect(chooseSubnet(r(routes), taken as string[])).toBe(expected);
  });

  test("every candidate taken: undefined", () => {
    expect(chooseSubnet(r("0.0.0.0/1 dev a\n128.0.0.0/1 dev b"), [])).toBeUndefined();
  });

  test("candidates are distinct, clean /24s in the documented order", () => {
    expect(SUBNET_CANDIDATES[0]).toBe("10.77.0.0/24");
    expect(SUBNET_CANDIDATES[1]).toBe("10.78.0.0/24");
    expect(SUBNET_CANDIDATES).toContain("192.168.177.0/24");
    expect(new Set(SUBNET_CANDIDATES).size).toBe(SUBNET_CANDIDATES.length);
    for (const c of SUBNET_CANDIDATES) expect(parseCidr(c)?.prefix).toBe(24);
  });
});

describe("resource tiers", () => {
  test.each([[1, 1], [2, 1], [3, 1], [4, 2], [8, 4], [16, 8], [64, 8]])("cpus: host %d -> %d", (host, vm) => {
    expect(cpuTier(host)).toBe(vm);
  });
  test.each([[2, 2048], [4, 2048], [7.9, 2048], [8, 4096], [15.5, 4096], [16, 8192], [256, 8192]])("memory: host %d GiB -> %d MiB", (g, mib) => {
    expect(memoryTier(g * GiB)).toBe(mib);
  });
  test.each([[5, 20], [79, 20], [80, 40], [2000, 40]])("disk: %d GiB free -> %d GiB", (g, d) => {
    expect(diskTier(g * GiB)).toBe(d);
  });

  test("nearestExisting climbs to a directory that exists", () => {
    const have = new Set(["/", "/home", "/home/u"]);
    expect(nearestExisting("/home/u/.local/share/aivm/vms", (p) => have.has(p))).toBe("/home/u");
    expect(nearestExisting("/nope/x", (p) => have.has(p))).toBe("/");
  });
});

describe("SSH identity", () => {
  const files = (...names: string[]) => (p: string) => names.some((n) => p === `/h/.ssh/${n}`);
  test.each([
    [["id_aivm_ed25519", "id_aivm_ed25519.pub", "id_ed25519", "id_ed25519.pub"], "/h/.ssh/id_aivm_ed25519"],
    [["id_ed25519", "id_ed25519.pub", "id_rsa", "id_rsa.pub"], "/h/.ssh/id_ed25519"],
    [["id_rsa", "id_rsa.pub"], "/h/.ssh/id_rsa"],
    [["id_ed25519"], undefined], // no public key: not usable
    [[], undefined],
  ])("%p -> %p", (have, expected) => {
    expect(findIdentity("/h", files(...have))).toBe(expected);
  });

  test("ssh-keygen argv: no shell, no passphrase, a comment naming the host", () => {
    expect(sshKeygenArgv("/h/.ssh/id_aivm_ed25519", "box.example.org")).toEqual(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "aivm@box", "-f", "/h/.ssh/id_aivm_ed25519"]);
  });

  test("createIdentity: declined -> nothing run", async () => {
    const { runner, fake } = fakeRunner({ yes: false, interactive: true, ask: async () => "n" });
    expect(await createIdentity(runner, "/tmp/x/id", "h")).toBe(false);
    expect(fake.commands()).toEqual([]);
  });

  test("createIdentity: no terminal and no --yes -> exit 2 (the caller warns instead)", async () => {
    const { runner, fake } = fakeRunner({ yes: false, interactive: false });
    await expect(createIdentity(runner, "/tmp/x/id", "h")).rejects.toMatchObject({ exitCode: 2 });
    expect(fake.commands()).toEqual([]);
  });

  test("createIdentity: --yes makes ~/.ssh when missing, then runs ssh-keygen", async () => {
    const dir = join(mkdtempSync(join(tmpdir(), "aivm-det-")), ".ssh");
    const { runner, fake } = fakeRunner({ yes: true });
    fake.on(["mkdir"], {}).on(["ssh-keygen"], {});
    expect(await createIdentity(runner, join(dir, "id_aivm_ed25519"), "h")).toBe(true);
    expect(fake.commands()).toEqual([`mkdir -p -m 700 ${dir}`, `ssh-keygen -q -t ed25519 -N  -C aivm@h -f ${dir}/id_aivm_ed25519`]);
  });
});

describe("detectFrom and defaultsDoc", () => {
  const facts = (over: Partial<DetectFacts> = {}): DetectFacts => ({
    home: "/home/u", hostname: "Work-Station.lan", cpus: 12, memBytes: 32 * GiB, freeBytes: 500 * GiB,
    routes: "default via 10.0.0.1 dev eth0\n10.77.0.0/24 dev br0\n", exists: () => false, ...over,
  });

  test("a host with a route on 10.77 and no key", () => {
    const d = detectFrom(facts(), {});
    expect(d).toMatchObject({ vmName: "aivm-work-station", networkName: "aivm-net", subnet: "10.78.0.0/24", cpus: 6, memoryMib: 8192, diskGib: 40, createIdentity: true, sshIdentity: "/home/u/.ssh/id_aivm_ed25519", warnings: [] });
    expect(d.image).toEqual(UBUNTU_2404);
  });

  test("a pinned image, a small disk, no free subnet: warnings", () => {
    const img = { url: "file:///srv/b.qcow2", sha256: "c".repeat(64) };
    const d = detectFrom(facts({ freeBytes: 10 * GiB, routes: "0.0.0.0/1 dev a\n128.0.0.0/1 dev b" }), {}, { image: img });
    expect(d.image).toEqual(img);
    expect(d.subnet).toBe("10.77.0.0/24");
    expect(d.warnings).toHaveLength(2);
  });

  test("existing defaults names are kept on --force", () => {
    const d = detectFrom(facts(), { defaults: { vm: { name: "mine" }, network: { name: "lan" } } });
    expect([d.vmName, d.networkName]).toEqual(["mine", "lan"]);
  });

  test("the [defaults] document is valid, renders, and uses ~/ paths", () => {
    const d = detectFrom(facts({ exists: (p) => p.startsWith("/home/u/.ssh/id_rsa") }), {});
    const doc = { defaults: defaultsDoc(d, "/home/u") };
    expect(doc.defaults.paths!.ssh_identity).toBe("~/.ssh/id_rsa");
    const text = renderToml(doc);
    expect(parseStore(text, "x.toml")).toEqual(doc);
    expect(text).toContain("memory_mib = 8192\n");
  });

  test("tildePath", () => {
    expect(tildePath("/home/u/.ssh/k", "/home/u")).toBe("~/.ssh/k");
    expect(tildePath("/home/u", "/home/u/")).toBe("~");
    expect(tildePath("/home/uu/k", "/home/u")).toBe("/home/uu/k");
    expect(tildePath("/srv/k", "/home/u")).toBe("/srv/k");
  });

  test("readHostFacts reads routes through the Runner (even under --dry-run)", async () => {
    const { runner, fake } = fakeRunner({ dryRun: true });
    fake.on(["ip", "-4", "route"], { stdout: "10.77.0.0/24 dev br0\n" });
    const f = await readHostFacts(runner, "/nonexistent/vms");
    expect(fake.commands()).toEqual(["ip -4 route"]);
    expect(f.routes).toBe("10.77.0.0/24 dev br0\n");
    expect(f.cpus).toBeGreaterThan(0);
    expect(f.freeBytes).toBeGreaterThan(0); // statfs of "/"
  });

  test("readHostFacts: a failing `ip` means no routes, not a crash", async () => {
    const { runner, fake } = fakeRunner();
    fake.on(["ip"], { exitCode: 127, stderr: "ip: not found" });
    expect((await readHostFacts(runner, "/x")).routes).toBe("");
  });
});
