import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runMain } from "./helpers/main.ts";
import { FakeBackend, fakeRunner } from "./helpers/fake-runner.ts";
import type { StoreDoc } from "../lib/config/model.ts";
import { resolveNetwork } from "../lib/config/resolve.ts";
import { applyFirewall, expectedTable, firewallStatus, formatFwStatus, mergeCidrs, normalizeTable, removeFirewall, renderRuleset, tableDrift, tableName } from "../lib/fw.ts";
import { EXIT } from "../lib/errors.ts";
import { parseStore } from "../lib/config/store.ts";
import { inject } from "../lib/cli/_shared.ts";
import { Runner } from "../lib/run.ts";

const PORTS_DOC: StoreDoc = { defaults: { firewall: { allow_tcp_ports: [8080, 22, 3000], allow_udp_ports: [5353], extra_block_cidrs: ["10.1.0.0/16", "8.8.8.8/32"] } } };
const net = resolveNetwork(PORTS_DOC);
/** What `nft list table inet aivm_aivm_net` printed (nft 1.0.6) after loading renderRuleset(net) in a scratch netns. */
const LISTING: string = "table inet aivm_aivm_net {\n\tset block_v4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 0.0.0.0/8, 8.8.8.8,\n\t\t\t     10.0.0.0/8, 100.64.0.0/10,\n\t\t\t     127.0.0.0/8, 169.254.0.0/16,\n\t\t\t     172.16.0.0/12, 192.168.0.0/16,\n\t\t\t     224.0.0.0/4, 240.0.0.0/4 }\n\t}\n\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\tiifname \"aivm-27f36c74\" jump guest_to_host\n\t}\n\n\tchain guest_to_host {\n\t\tmeta nfproto ipv6 drop\n\t\tct state established,related accept\n\t\tudp dport { 67, 68 } accept\n\t\tip daddr 10.77.0.1 udp dport 53 accept\n\t\tip daddr 10.77.0.1 tcp dport 53 accept\n\t\tip daddr 10.77.0.1 icmp type echo-request accept\n\t\ttcp dport { 22, 3000, 8080 } accept\n\t\tudp dport 5353 accept\n\t\tdrop\n\t}\n\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tiifname \"aivm-27f36c74\" jump guest_forward\n\t}\n\n\tchain guest_forward {\n\t\tmeta nfproto ipv6 drop\n\t\tct state established,related accept\n\t\tip daddr @block_v4 drop\n\t\taccept\n\t}\n}\n";
const ABSENT = { exitCode: 1, stderr: "Error: No such file or directory\nlist table inet aivm_aivm_net\n                ^^^^^^^^^^^^^\n" };
const LIST = ["nft", "list", "table", "inet", "aivm_aivm_net"];

describe("tableName", () => {
  for (const [n, t] of [["aivm-net", "aivm_aivm_net"], ["a", "aivm_a"], ["x-1-2", "aivm_x_1_2"]] as const) {
    test(n, () => expect(tableName(n)).toBe(t));
  }
  test("refuses an invalid name", () => expect(() => tableName('a"b')).toThrow());
});

describe("mergeCidrs", () => {
  const table: [string[], string[]][] = [
    [["10.0.0.0/8", "10.1.0.0/16"], ["10.0.0.0/8"]],
    [["192.168.0.0/16", "10.0.0.0/8", "10.0.0.0/8"], ["10.0.0.0/8", "192.168.0.0/16"]],
    [["8.8.8.8/32", "8.8.8.0/24"], ["8.8.8.0/24"]],
    [["1.2.3.4/32", "1.2.3.5/32"], ["1.2.3.4", "1.2.3.5"]],
    [[], []],
  ];
  for (const [input, want] of table) test(input.join(" ") || "empty", () => expect(mergeCidrs(input)).toEqual(want));
});

describe("renderRuleset", () => {
  test("defaults: snapshot", () => expect(renderRuleset(resolveNetwork({}))).toMatchSnapshot());
  test("ports and extra blocks: snapshot", () => expect(renderRuleset(net)).toMatchSnapshot());
  test("one transaction: create-if-missing, delete, full table", () => {
    const lines = renderRuleset(net).split("\n").filter((l) => l && !l.startsWith("#"));
    expect(lines.slice(0, 3)).toEqual(["table inet aivm_aivm_net {}", "delete table inet aivm_aivm_net", "table inet aivm_aivm_net {"]);
  });
  test("empty block list: no set, no block rule", () => {
    const n = resolveNetwork({ defaults: { firewall: { block_cidrs: [] } } });
    const r = renderRuleset(n);
    expect(r).not.toContain("block_v4");
    expect(r).toContain("ct state established,related accept\n\t\taccept\n");
  });
  test("guest -> host: DHCP, DNS and ping to the gateway, allowed ports, then drop; IPv6 dropped", () => {
    const r = renderRuleset(net);
    const chain = r.slice(r.indexOf("chain guest_to_host"), r.indexOf("chain forward"));
    const rules = normalizeTable(chain).slice(1, -1);
    expect(rules).toEqual([
      "meta nfproto ipv6 drop", "ct state established,related accept", "udp dport { 67, 68 } accept",
      "ip daddr 10.77.0.1 udp dport 53 accept", "ip daddr 10.77.0.1 tcp dport 53 accept", "ip daddr 10.77.0.1 icmp type echo-request accept",
      "tcp dport { 22, 3000, 8080 } accept", "udp dport 5353 accept", "drop",
    ]);
  });
  test("a hostile bridge or gateway that bypassed config validation is refused", () => {
    expect(() => renderRuleset({ ...net, bridge: 'br"0' })).toThrow();
    expect(() => renderRuleset({ ...net, bridge: "br0\n}" })).toThrow();
    expect(() => renderRuleset({ ...net, gateway: "10.77.0.1; drop" })).toThrow();
    expect(() => renderRuleset({ ...net, firewall: { ...net.firewall, allowTcp: [70000] } })).toThrow();
    expect(() => renderRuleset({ ...net, firewall: { ...net.firewall, blockCidrs: ["10.0.0.0/8 }"] } })).toThrow();
  });
});

describe("comparing with the live table", () => {
  test("nft's listing of the loaded table equals the rendered table", () => {
    expect(normalizeTable(LISTING)).toEqual(expectedTable(net));
    expect(tableDrift(expectedTable(net), normalizeTable(LISTING))).toEqual([]);
  });
  test("drift: extra rule, missing rule, reordering", () => {
    const want = ["a", "b", "c"];
    expect(tableDrift(want, ["a", "b", "x", "c"])).toEqual(["unexpected: x"]);
    expect(tableDrift(want, ["a", "c"])).toEqual(["missing: b"]);
    expect(tableDrift(want, ["c", "b", "a"])).toEqual(["rules are in a different order"]);
  });
  test("a changed port list shows as drift", () => {
    const other = resolveNetwork({ defaults: { firewall: { ...PORTS_DOC.defaults!.firewall, allow_tcp_ports: [22] } } });
    expect(tableDrift(expectedTable(other), normalizeTable(LISTING))).toEqual(["missing: tcp dport 22 accept", "unexpected: tcp dport { 22, 3000, 8080 } accept"]);
  });
});

describe("applyFirewall / removeFirewall / firewallStatus", () => {
  test("disabled: nothing run", async () => {
    const { runner, fake } = fakeRunner();
    expect(await applyFirewall(runner, resolveNetwork({ defaults: { firewall: { enabled: false } } }))).toBe("disabled");
    expect(fake.calls).toEqual([]);
  });
  test("absent: one privileged nft -f - with the ruleset on stdin", async () => {
    const { runner, fake } = fakeRunner();
    fake.on(LIST, ABSENT).on(["nft", "-f", "-"], {});
    expect(await applyFirewall(runner, net)).toBe("applied");
    expect(fake.commands()).toEqual([LIST.join(" "), "nft -f -"]);
    expect(fake.calls[1]!.input).toBe(renderRuleset(net));
  });
  test("live equals rendered: unchanged", async () => {
    const { runner, fake } = fakeRunner();
    fake.on(LIST, { stdout: LISTING });
    expect(await applyFirewall(runner, net)).toBe("unchanged");
    expect(fake.commands()).toEqual([LIST.join(" ")]);
  });
  test("live differs: applied", async () => {
    const { runner, fake } = fakeRunner();
    fake.on(LIST, { stdout: LISTING.replace("\t\tdrop\n", "\t\ttcp dport 9999 accept\n\t\tdrop\n") }).on(["nft", "-f", "-"], {});
    expect(await applyFirewall(runner, net)).toBe("applied");
    expect(fake.commands()).toContain("nft -f -");
  });
  test("not root: sudo -n on reads and the apply", async () => {
    const { runner, fake } = fakeRunner({ isRoot: false });
    fake.on(["sudo", "-n", ...LIST], ABSENT).on(["sudo", "-n", "nft", "-f", "-"], {});
    expect(await applyFirewall(runner, net)).toBe("applied");
    expect(fake.commands()).toEqual([`sudo -n ${LIST.join(" ")}`, "sudo -n nft -f -"]);
  });
  test("--dry-run: prints the document, loads nothing", async () => {
    const { runner, fake, printed } = fakeRunner({ dryRun: true });
    fake.on(LIST, ABSENT);
    expect(await applyFirewall(runner, net)).toBe("applied");
    expect(fake.commands()).toEqual([LIST.join(" ")]);
    expect(printed.join("\n")).toContain("nft -f - <<'AIVM_EOF'\n# aivm isolation");
  });
  test("no terminal and no --yes: exit 2, nothing loaded", async () => {
    const { runner, fake } = fakeRunner({ yes: false });
    fake.on(LIST, ABSENT);
    const err = await applyFirewall(runner, net).catch((e) => e);
    expect(err.exitCode).toBe(EXIT.USAGE);
    expect(fake.commands()).toEqual([LIST.join(" ")]);
  });
  test("nft failing for another reason is an error, not 'absent'", async () => {
    const { runner, fake } = fakeRunner();
    fake.on(LIST, { exitCode: 1, stderr: "Error: Operation not permitted\n" });
    const err = await applyFirewall(runner, net).catch((e) => e);
    expect(err.exitCode).toBe(EXIT.FAILED);
    expect(err.message).toContain("Operation not permitted");
  });
  test("remove: present -> nft delete table; absent -> nothing", async () => {
    const a = fakeRunner();
    a.fake.on(LIST, { stdout: LISTING }).on(["nft", "delete"], {});
    expect(await removeFirewall(a.runner, net)).toBe("removed");
    expect(a.fake.commands()).toEqual([LIST.join(" "), "nft delete table inet aivm_aivm_net"]);
    const b = fakeRunner();
    b.fake.on(LIST, ABSENT);
    expect(await removeFirewall(b.runner, net)).toBe("absent");
    expect(b.fake.commands()).toEqual([LIST.join(" ")]);
  });
  test("status: present/equal/drift", async () => {
    const a = fakeRunner();
    a.fake.on(LIST, { stdout: LISTING });
    expect(await firewallStatus(a.runner, net)).toEqual({ network: "aivm-net", table: "aivm_aivm_net", enabled: true, present: true, equal: true, drift: [] });
    const b = fakeRunner();
    b.fake.on(LIST, ABSENT);
    const s = await firewallStatus(b.runner, net);
    expect(s).toMatchObject({ present: false, equal: false, drift: ["table is absent"] });
    expect(formatFwStatus(s)).toMatchSnapshot();
  });
});

describe("invalid values never reach the ruleset", () => {
  const refused = (toml: string, re: RegExp) => {
    let err: unknown;
    try { parseStore(toml, "c.toml"); } catch (e) { err = e; }
    expect((err as { exitCode?: number })?.exitCode).toBe(EXIT.CONFIG);
    expect(String((err as Error).message)).toMatch(re);
  };
  test("port 70000", () => refused("[defaults.firewall]\nallow_tcp_ports = [22, 70000]\n", /70000/));
  test("port 0 in udp", () => refused("[defaults.firewall]\nallow_udp_ports = [0]\n", /allow_udp_ports/));
  test("a port as a string", () => refused('[defaults.firewall]\nallow_tcp_ports = ["22"]\n', /allow_tcp_ports/));
  test("a CIDR with host bits or junk", () => {
    refused('[defaults.firewall]\nblock_cidrs = ["10.0.0.1/8"]\n', /block_cidrs/);
    refused('[defaults.firewall]\nextra_block_cidrs = ["10.0.0.0/8 } accept"]\n', /extra_block_cidrs/);
  });
  test("a bridge with a quote", () => refused('[[networks]]\nname = "n"\nbridge = "br\\"0"\n', /bridge/));
});

// ---------- commands ----------

describe("aivm fw (commands)", () => {
  const dir = mkdtempSync(join(tmpdir(), "aivm-fw-"));
  let fake: FakeBackend;
  afterEach(() => { delete inject.runner; });
  function setup(doc: string, script: (f: FakeBackend) => void = () => {}) {
    const path = join(dir, `c${Math.random().toString(36).slice(2)}.toml`);
    writeFileSync(path, doc);
    fake = new FakeBackend();
    script(fake);
    inject.runner = ({ dryRun, yes }) => new Runner(fake, { isRoot: true, interactive: false, dryRun, yes, print: () => {} });
    return path;
  }
  const run = runMain;

  test("fw rules with only [defaults] runs nothing and prints the ruleset", async () => {
    const cfg = setup('[defaults.network]\nname = "sandbox"\n');
    const r = await run(["fw", "rules", "--config", cfg]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("table inet aivm_sandbox {");
    expect(fake.calls).toEqual([]);
  });
  test("fw status --json", async () => {
    const cfg = setup("", (f) => f.on(LIST, ABSENT));
    const r = await run(["fw", "status", "--config", cfg, "--json"]);
    expect(JSON.parse(r.stdout)).toEqual({ network: "aivm-net", table: "aivm_aivm_net", enabled: true, present: false, equal: false, drift: ["table is absent"] });
  });
  test("fw remove of an absent table: exit 0 with a note", async () => {
    const cfg = setup("", (f) => f.on(LIST, ABSENT));
    const r = await run(["fw", "remove", "--config", cfg, "--yes"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("nothing to remove");
  });
  test("fw apply --dry-run loads nothing", async () => {
    const cfg = setup("", (f) => f.on(LIST, ABSENT));
    const r = await run(["fw", "apply", "--config", cfg, "--dry-run"]);
    expect(r.code).toBe(0);
    expect(fake.commands()).toEqual([LIST.join(" ")]);
  });
  test("fw rules for an invalid network name: exit 2", async () => {
    const cfg = setup("");
    expect((await run(["fw", "rules", "a;b", "--config", cfg])).code).toBe(EXIT.USAGE);
  });
});

// ---------- for real, inside a network namespace this test creates (root + ip + nft only) ----------

const canNetns = process.getuid?.() === 0 && !!Bun.which("ip") && !!Bun.which("nft");
describe.skipIf(!canNetns)("fw in a private network namespace", () => {
  test("apply, unchanged, drift, re-apply, remove", async () => {
    const ns = `aivm-fwtest-${process.pid}`;
    const home = mkdtempSync(join(tmpdir(), "aivm-fwns-"));
    const cfg = join(home, "config.toml");
    writeFileSync(cfg, "[defaults.firewall]\nallow_tcp_ports = [8080, 22, 3000]\nallow_udp_ports = [5353]\nextra_block_cidrs = [\"10.1.0.0/16\", \"8.8.8.8/32\"]\n");
    const sh = (argv: string[]) => Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe", env: { ...process.env, HOME: home, XDG_CONFIG_HOME: home } });
    const aivm = (...a: string[]) => sh(["ip", "netns", "exec", ns, process.execPath, join(import.meta.dir, "../bin/aivm.ts"), ...a, "--config", cfg]);
    expect(sh(["ip", "netns", "add", ns]).exitCode).toBe(0);
    try {
      expect(aivm("fw", "apply", "--yes").stderr.toString()).toContain("applied");
      expect(aivm("fw", "apply", "--yes").stderr.toString()).toContain("nothing changed");
      expect(JSON.parse(aivm("fw", "status", "--json").stdout.toString())).toMatchObject({ present: true, equal: true, drift: [] });
      expect(sh(["ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "aivm_aivm_net", "guest_to_host", "tcp", "dport", "9999", "accept"]).exitCode).toBe(0);
      expect(JSON.parse(aivm("fw", "status", "--json").stdout.toString())).toMatchObject({ equal: false, drift: ["unexpected: tcp dport 9999 accept"] });
      expect(aivm("fw", "apply", "--yes").exitCode).toBe(0);
      expect(JSON.parse(aivm("fw", "status", "--json").stdout.toString())).toMatchObject({ equal: true });
      expect(aivm("fw", "remove", "--yes").exitCode).toBe(0);
      expect(sh(["ip", "netns", "exec", ns, "nft", "list", "tables"]).stdout.toString()).not.toContain("aivm_aivm_net");
      const again = aivm("fw", "remove", "--yes");
      expect(again.exitCode).toBe(0);
      expect(again.stderr.toString()).toContain("nothing to remove");
    } finally {
      sh(["ip", "netns", "del", ns]);
      rmSync(home, { recursive: true, force: true });
    }
  }, 30000);
});
