import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runMain } from "./helpers/main.ts";
import { FakeBackend, fakeRunner } from "./helpers/fake-runner.ts";
import { resolveNetwork } from "../lib/config/resolve.ts";
import { destroyNetwork, ensureNetwork, formatNetStatus, networkStatus, networkUsers, overlappingRoute, parseRoutes, renderNetworkXml } from "../lib/net.ts";
import { parseLeases, parseNetworkXml } from "../lib/libvirt/parse.ts";
import { EXIT } from "../lib/errors.ts";
import { networkDrift } from "../lib/drift.ts";
import type { StoreDoc } from "../lib/config/model.ts";
import { parseStore } from "../lib/config/store.ts";
import { inject } from "../lib/cli/_shared.ts";
import { Runner } from "../lib/run.ts";

const URI = "qemu:///system";
const V = ["virsh", "-q", "-c", URI];
const net = resolveNetwork({});

const info = (o: { active: boolean; autostart: boolean; persistent?: boolean; bridge?: string }) => ({
  stdout: `Name:           ${net.name}\nUUID:           0b3c1c1e-0000-4000-8000-000000000000\nActive:         ${o.active ? "yes" : "no"}\n` +
    `Persistent:     ${o.persistent === false ? "no" : "yes"}\nAutostart:      ${o.autostart ? "yes" : "no"}\nBridge:         ${o.bridge ?? net.bridge}\n`,
});
const NOT_FOUND = { exitCode: 1, stderr: `error: failed to get network '${net.name}'\nerror: Network not found: no network with matching name '${net.name}'\n` };
const ROUTES = "default via 192.168.1.1 dev eth0 proto dhcp src 192.168.1.20 metric 100\n192.168.1.0/24 dev eth0 proto kernel scope link src 192.168.1.20\n";

function scripted(state: "absent" | "inactive" | "active" | "active-noauto", o: { routes?: string; dumpxml?: string; dryRun?: boolean } = {}) {
  const f = fakeRunner({ dryRun: o.dryRun });
  const { fake } = f;
  fake.on([...V, "net-info", net.name], state === "absent" ? NOT_FOUND : info({ active: state !== "inactive", autostart: state === "active" }));
  fake.on([...V, "net-dumpxml", net.name], { stdout: o.dumpxml ?? renderNetworkXml(net) });
  fake.on(["ip", "-4", "route"], { stdout: o.routes ?? ROUTES });
  for (const c of ["net-define", "net-start", "net-autostart", "net-destroy", "net-undefine"]) fake.on([...V, c], {});
  return f;
}

const MUTATING = /net-(define|start|autostart|destroy|undefine)/;

describe("renderNetworkXml", () => {
  test("defaults (what `aivm up` would create right after config init)", () => {
    expect(renderNetworkXml(net)).toMatchSnapshot();
  });
  test("custom bridge, /29 subnet", () => {
    const n = resolveNetwork({ networks: [{ name: "tiny", bridge: "br_tiny-0", subnet: "192.168.50.8/29" }] }, "tiny");
    const xml = renderNetworkXml(n);
    expect(xml).toContain("<bridge name='br_tiny-0' stp='on' delay='0'/>");
    expect(xml).toContain("<ip address='192.168.50.9' netmask='255.255.255.248'>");
    expect(xml).toContain("<range start='192.168.50.10' end='192.168.50.14'/>");
    expect(xml).toMatchSnapshot();
  });
  test("/16 subnet with explicit gateway and range", () => {
    const n = resolveNetwork({ networks: [{ name: "big", subnet: "172.30.0.0/16", gateway: "172.30.255.254", dhcp_start: "172.30.1.0", dhcp_end: "172.30.200.255" }] }, "big");
    const xml = renderNetworkXml(n);
    expect(xml).toContain("<ip address='172.30.255.254' netmask='255.255.0.0'>");
    expect(parseNetworkXml(xml)).toEqual({ bridge: n.bridge, subnet: "172.30.0.0/16", gateway: "172.30.255.254" });
  });
});

describe("routes", () => {
  const table: [string, string, string | undefined][] = [
    ["no overlap", ROUTES, undefined],
    ["same /24 on eth0", "10.77.0.0/24 dev eth0 proto kernel scope link", "10.77.0.0/24 dev eth0 proto kernel scope link"],
    ["wider /8 route", "10.0.0.0/8 via 192.168.1.1 dev tun0", "10.0.0.0/8 via 192.168.1.1 dev tun0"],
    ["narrower host route", "10.77.0.55 dev wg0 scope link", "10.77.0.55 dev wg0 scope link"],
    ["blackhole type prefix", "blackhole 10.77.0.128/25", "blackhole 10.77.0.128/25"],
    ["own bridge is ignored", `10.77.0.0/24 dev ${net.bridge} proto kernel scope link src 10.77.0.1 linkdown`, undefined],
    ["default is ignored", "default via 10.77.0.1 dev eth0", undefined],
    ["adjacent subnet", "10.77.1.0/24 dev eth1\n10.76.255.0/24 dev eth2", undefined],
  ];
  for (const [what, text, hit] of table) {
    test(what, () => {
      expect(overlappingRoute(net, parseRoutes(text))?.line).toBe(hit);
    });
  }
  test("parses dev and /32", () => {
    expect(parseRoutes("10.1.2.3 dev wg0")[0]).toMatchObject({ prefix: "10.1.2.3/32", dev: "wg0" });
  });
});

describe("ensureNetwork", () => {
  test("absent: checks routes, defines from stdin, starts, autostarts (one step)", async () => {
    const { runner, fake } = scripted("absent");
    expect(await ensureNetwork(runner, URI, net)).toBe("created");
    expect(fake.commands()).toEqual([
      `virsh -q -c ${URI} net-info aivm-net`,
      "ip -4 route",
      `virsh -q -c ${URI} net-define /dev/stdin`,
      `virsh -q -c ${URI} net-start aivm-net`,
      `virsh -q -c ${URI} net-autostart aivm-net`,
    ]);
    expect(fake.calls[2]!.input).toBe(renderNetworkXml(net));
  });
  test("absent + overlapping route: exit 2 naming the route, nothing defined", async () => {
    const { runner, fake } = scripted("absent", { routes: ROUTES + "10.77.0.0/16 dev docker0 proto kernel scope link\n" });
    const err = await ensureNetwork(runner, URI, net).catch((e) => e);
    expect(err.exitCode).toBe(EXIT.USAGE);
    expect(err.message).toContain("10.77.0.0/16 dev docker0");
    expect(err.message.split("\n")).toHaveLength(1);
    expect(fake.commands().filter((c) => MUTATING.test(c))).toEqual([]);
  });
  test("defined but inactive: start + autostart", async () => {
    const { runner, fake } = scripted("inactive");
    expect(await ensureNetwork(runner, URI, net)).toBe("started");
    expect(fake.commands().filter((c) => MUTATING.test(c))).toEqual([`virsh -q -c ${URI} net-start aivm-net`, `virsh -q -c ${URI} net-autostart aivm-net`]);
    expect(fake.commands()).not.toContain("ip -4 route");
  });
  test("active with autostart: unchanged, no mutation", async () => {
    const { runner, fake } = scripted("active");
    expect(await ensureNetwork(runner, URI, net)).toBe("unchanged");
    expect(fake.commands().filter((c) => MUTATING.test(c))).toEqual([]);
  });
  test("active without autostart: unchanged, autostart set", async () => {
    const { runner, fake } = scripted("active-noauto");
    expect(await ensureNetwork(runner, URI, net)).toBe("unchanged");
    expect(fake.commands().filter((c) => MUTATING.test(c))).toEqual([`virsh -q -c ${URI} net-autostart aivm-net`]);
  });
  test("defined with another bridge and subnet: not redefined", async () => {
    const other = resolveNetwork({ networks: [{ name: "aivm-net", bridge: "virbr9", subnet: "10.9.0.0/24" }] });
    const { runner, fake } = scripted("active", { dumpxml: renderNetworkXml(other) });
    expect(await ensureNetwork(runner, URI, net)).toBe("unchanged");
    expect(fake.commands().some((c) => MUTATING.test(c))).toBe(false);
    expect(networkDrift(net, parseNetworkXml(renderNetworkXml(other)))).toEqual([
      `bridge is virbr9, config says ${net.bridge}`, "subnet is 10.9.0.0/24, config says 10.77.0.0/24", "gateway is 10.9.0.1, config says 10.77.0.1",
    ]);
  });
  test("--dry-run prints the step and runs only reads", async () => {
    const { runner, fake, printed } = scripted("absent", { dryRun: true });
    expect(await ensureNetwork(runner, URI, net)).toBe("created");
    expect(fake.commands().some((c) => MUTATING.test(c))).toBe(false);
    const text = printed.join("\n");
    expect(text).toContain(`virsh -q -c ${URI} net-define /dev/stdin <<'AIVM_EOF'\n<network>`);
    expect(text).toContain(`virsh -q -c ${URI} net-autostart aivm-net`);
  });
  test("unreachable libvirtd: exit 69", async () => {
    const { runner, fake } = fakeRunner();
    fake.on([...V], { exitCode: 1, stderr: "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory\n" });
    const err = await ensureNetwork(runner, URI, net).catch((e) => e);
    expect(err.exitCode).toBe(EXIT.UNAVAILABLE);
    expect(err.message).toContain("/var/run/libvirt/libvirt-sock");
  });
  test("a transient network is started but never autostarted", async () => {
    const { runner, fake } = scripted("active");
    fake.on([...V, "net-info", net.name], info({ active: false, autostart: false, persistent: false }));
    expect(await ensureNetwork(runner, URI, net)).toBe("started");
    expect(fake.commands().filter((c) => MUTATING.test(c))).toEqual([`virsh -q -c ${URI} net-start aivm-net`]);
  });
});

describe("destroyNetwork", () => {
  const doc: StoreDoc = { networks: [{ name: "aivm-net" }], vms: [{ name: "a", network: "aivm-net" }, { name: "b", network: "other" }] };
  test("networkUsers", () => {
    expect(networkUsers(doc, "aivm-net")).toEqual(["a"]);
    expect(networkUsers({}, "aivm-net")).toEqual([]);
  });
  test("refuses while VMs use it (exit 2), nothing run", async () => {
    const { runner, fake } = scripted("active");
    const err = await destroyNetwork(runner, URI, net, { users: ["a"] }).catch((e) => e);
    expect(err.exitCode).toBe(EXIT.USAGE);
    expect(err.message).toContain("in use by a");
    expect(fake.commands()).toEqual([]);
  });
  test("--force: destroy + undefine", async () => {
    const { runner, fake } = scripted("active");
    expect(await destroyNetwork(runner, URI, net, { users: ["a"], force: true })).toBe("destroyed");
    expect(fake.commands().filter((c) => MUTATING.test(c))).toEqual([`virsh -q -c ${URI} net-destroy aivm-net`, `virsh -q -c ${URI} net-undefine aivm-net`]);
  });
  test("inactive: undefine only", async () => {
    const { runner, fake } = scripted("inactive");
    expect(await destroyNetwork(runner, URI, net)).toBe("destroyed");
    expect(fake.commands().filter((c) => MUTATING.test(c))).toEqual([`virsh -q -c ${URI} net-undefine aivm-net`]);
  });
  test("absent: nothing to do", async () => {
    const { runner, fake } = scripted("absent");
    expect(await destroyNetwork(runner, URI, net)).toBe("absent");
    expect(fake.commands().some((c) => MUTATING.test(c))).toBe(false);
  });
  test("--dry-run runs no mutation", async () => {
    const { runner, fake, printed } = scripted("active", { dryRun: true });
    expect(await destroyNetwork(runner, URI, net)).toBe("destroyed");
    expect(fake.commands().some((c) => MUTATING.test(c))).toBe(false);
    expect(printed.join("\n")).toContain(`virsh -q -c ${URI} net-undefine aivm-net`);
  });
});

describe("status", () => {
  const LEASES = " Expiry Time           MAC address         Protocol   IP address       Hostname   Client ID or DUID\n" +
    "------------------------------------------------------------------------------------------------------------\n" +
    " 2026-03-01 12:00:00   52:54:00:AA:bb:cc   ipv4       10.77.0.120/24   vm1        01:52:54:00:aa:bb:cc\n" +
    " 2026-03-01 12:05:00   52:54:00:11:22:33   ipv4       10.77.0.121/24   -          -\n";
  test("parseLeases", () => {
    expect(parseLeases(LEASES)).toEqual([
      { expiry: "2026-03-01 12:00:00", mac: "52:54:00:aa:bb:cc", protocol: "ipv4", ip: "10.77.0.120/24", hostname: "vm1" },
      { expiry: "2026-03-01 12:05:00", mac: "52:54:00:11:22:33", protocol: "ipv4", ip: "10.77.0.121/24", hostname: null },
    ]);
  });
  test("active network: stable object and one fact per line", async () => {
    const { runner, fake } = scripted("active");
    fake.on([...V, "net-dhcp-leases", net.name], { stdout: LEASES });
    const s = await networkStatus(runner, URI, net);
    expect(Object.keys(s)).toEqual(["name", "defined", "active", "autostart", "persistent", "bridge", "subnet", "gateway", "drift", "leases"]);
    expect(s).toMatchObject({ defined: true, active: true, autostart: true, drift: [] });
    expect(s.leases).toHaveLength(2);
    expect(formatNetStatus(s)).toMatchSnapshot();
  });
  test("a lease's hostname is the guest's word: shown without control characters", async () => {
    const { runner, fake } = scripted("active");
    fake.on([...V, "net-dhcp-leases", net.name], { stdout: LEASES.replace("vm1", "vm1\x1b]0;pwned\x07") });
    const s = await networkStatus(runner, URI, net);
    expect(formatNetStatus(s)).toContain("vm1\\x1b]0;pwned\\x07");
  });
  test("absent network reads no leases", async () => {
    const { runner, fake } = scripted("absent");
    const s = await networkStatus(runner, URI, net);
    expect(s).toMatchObject({ defined: false, active: false, leases: [] });
    expect(fake.commands()).toEqual([`virsh -q -c ${URI} net-info aivm-net`]);
  });
});

describe("invalid values never reach the XML", () => {
  test("bridge with a quote is refused by the config (exit 78)", () => {
    expect(() => parseStore(`[[networks]]\nname = "n"\nbridge = "br'0"\n`, "c.toml")).toThrow(/bridge/);
    try { parseStore(`[[networks]]\nname = "n"\nbridge = "br'0"\n`, "c.toml"); } catch (e) { expect((e as { exitCode: number }).exitCode).toBe(EXIT.CONFIG); }
  });
  test("16-character bridge, bad subnet and name are refused", () => {
    expect(() => parseStore(`[[networks]]\nname = "n"\nbridge = "abcdefghijklmnop"\n`, "c.toml")).toThrow(/bridge/);
    expect(() => parseStore(`[defaults.network]\nsubnet = "10.77.0.1/24"\n`, "c.toml")).toThrow(/subnet/);
    expect(() => parseStore(`[[networks]]\nname = "a<b"\n`, "c.toml")).toThrow(/name/);
  });
  test("gateway outside the subnet is refused when the store is read, with its position (resolution never checks)", () => {
    expect(() => parseStore(`[defaults.network]\ngateway = "10.78.0.1"\n`, "c.toml")).toThrow("c.toml:2:1: defaults.network.gateway: network aivm-net: gateway 10.78.0.1 is not a host address in 10.77.0.0/24");
  });
});

// ---------- the commands, through the dispatcher, with an injected fake runner ----------

describe("aivm net (commands)", () => {
  let fake: FakeBackend;
  let printed: string[];
  const dir = mkdtempSync(join(tmpdir(), "aivm-net-"));
  afterEach(() => { delete inject.runner; });

  function setup(doc: string, script: (f: FakeBackend) => void) {
    const path = join(dir, `c${Math.random().toString(36).slice(2)}.toml`);
    writeFileSync(path, doc);
    fake = new FakeBackend();
    printed = [];
    script(fake);
    inject.runner = ({ dryRun, yes }) => new Runner(fake, { isRoot: true, interactive: false, dryRun, yes, print: (t) => printed.push(t) });
    return path;
  }

  const run = runMain;


  test("net xml with only [defaults] runs nothing", async () => {
    const cfg = setup(`[defaults.network]\nname = "sandbox"\nsubnet = "10.88.0.0/24"\n`, () => {});
    const r = await run(["net", "xml", "--config", cfg]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("<name>sandbox</name>");
    expect(r.stdout).toContain("<ip address='10.88.0.1' netmask='255.255.255.0'>");
    expect(fake.calls).toEqual([]);
  });
  test("net xml for an unknown network: exit 2", async () => {
    const cfg = setup(`[[networks]]\nname = "a"\n`, () => {});
    expect((await run(["net", "xml", "nope", "--config", cfg])).code).toBe(EXIT.USAGE);
  });
  test("net destroy refuses while a VM uses it (exit 2), --force destroys", async () => {
    const doc = `[[networks]]\nname = "aivm-net"\n\n[[vms]]\nname = "box"\nnetwork = "aivm-net"\n`;
    const cfg = setup(doc, (f) => {
      f.on([...V, "net-info"], info({ active: true, autostart: true }));
      f.on([...V, "net-destroy"], {});
      f.on([...V, "net-undefine"], {});
    });
    const r = await run(["net", "destroy", "--config", cfg, "--yes"]);
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.stderr).toContain("in use by box");
    expect(fake.commands().some((c) => MUTATING.test(c))).toBe(false);
    const r2 = await run(["net", "destroy", "--config", cfg, "--yes", "--force"]);
    expect(r2.code).toBe(0);
    expect(fake.commands().filter((c) => MUTATING.test(c))).toHaveLength(2);
  });
  test("net destroy of an absent network: exit 0 with a note", async () => {
    const cfg = setup("", (f) => f.on([...V, "net-info"], NOT_FOUND));
    const r = await run(["net", "destroy", "--config", cfg, "--yes"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("not defined");
  });
  test("net create without --yes and no terminal: exit 2, nothing defined", async () => {
    const cfg = setup("", (f) => { f.on([...V, "net-info"], NOT_FOUND); f.on(["ip", "-4", "route"], { stdout: ROUTES }); });
    const r = await run(["net", "create", "--config", cfg]);
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.stderr).toContain("--yes");
    expect(fake.commands().some((c) => MUTATING.test(c))).toBe(false);
  });
  test("net create --dry-run prints the commands and changes nothing", async () => {
    const cfg = setup("", (f) => { f.on([...V, "net-info"], NOT_FOUND); f.on(["ip", "-4", "route"], { stdout: ROUTES }); });
    const r = await run(["net", "create", "--config", cfg, "--dry-run"]);
    expect(r.code).toBe(0);
    expect(printed.join("\n")).toContain("net-define /dev/stdin");
    expect(fake.commands().some((c) => MUTATING.test(c))).toBe(false);
  });
  test("net create with libvirtd unreachable: exit 69", async () => {
    const cfg = setup("", (f) => f.on(["virsh"], { exitCode: 1, stderr: "error: failed to connect to the hypervisor\n" }));
    const r = await run(["net", "create", "--config", cfg, "--yes"]);
    expect(r.code).toBe(EXIT.UNAVAILABLE);
    expect(r.stderr).toContain("cannot reach libvirtd at qemu:///system");
  });
  test("net status --json and net list --json", async () => {
    const cfg = setup(`[[networks]]\nname = "aivm-net"\n\n[[networks]]\nname = "other"\nsubnet = "10.78.0.0/24"\n`, (f) => {
      f.on([...V, "net-info", "aivm-net"], info({ active: true, autostart: true }));
      f.on([...V, "net-info", "other"], { exitCode: 1, stderr: "error: Network not found: no network with matching name 'other'" });
      f.on([...V, "net-dumpxml", "aivm-net"], { stdout: renderNetworkXml(net) });
      f.on([...V, "net-dhcp-leases", "aivm-net"], { stdout: "" });
    });
    const s = await run(["net", "status", "--config", cfg, "--json"]);
    expect(s.code).toBe(0);
    expect(JSON.parse(s.stdout)).toMatchObject({ name: "aivm-net", defined: true, active: true, autostart: true, leases: [] });
    const l = await run(["net", "list", "--config", cfg, "--json"]);
    expect(JSON.parse(l.stdout).map((x: { name: string; active: boolean; defined: boolean }) => [x.name, x.defined, x.active])).toEqual([["aivm-net", true, true], ["other", false, false]]);
    const t = await run(["net", "status", "--config", cfg]);
    expect(t.stdout.split("\n")).toContain("active: yes");
  });
});
