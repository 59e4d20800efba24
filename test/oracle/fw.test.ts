// Oracle: the rendered ruleset through nft's own parser and checker (nft -c -f FILE; needs root, changes nothing).
import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { StoreDoc } from "../../lib/config/model.ts";
import { expectedTable, normalizeTable, renderRuleset, tableDrift, tableName } from "../../lib/fw.ts";
import { resolveNetwork } from "../../lib/config/resolve.ts";

const has = (t: string) => !!Bun.which(t);
const isRoot = process.getuid?.() === 0;
if ((!has("nft") || !isRoot) && process.env.CI === "true") throw new Error("nft -c needs the nft binary and root; CI may not skip oracles");

const dir = mkdtempSync(join(tmpdir(), "aivm-oracle-fw-"));
const manyPorts = Array.from({ length: 300 }, (_, i) => 1 + i * 211);
const long = "n" + "-x".repeat(31);

const configs: [string, StoreDoc, string?][] = [
  ["defaults only", {}],
  ["many ports, both protocols, edge ports", { defaults: { firewall: { allow_tcp_ports: [65535, 1, ...manyPorts], allow_udp_ports: [53, 67, 65535, ...manyPorts] } } }],
  ["single ports", { defaults: { firewall: { allow_tcp_ports: [22], allow_udp_ports: [5353] } } }],
  ["nested, duplicate and /32 block entries", { defaults: { firewall: { extra_block_cidrs: ["10.1.0.0/16", "10.0.0.0/8", "8.8.8.8/32", "8.8.8.9/32", "203.0.113.0/24"] } } }],
  ["block everything", { defaults: { firewall: { block_cidrs: ["0.0.0.0/0"] } } }],
  ["empty block list", { defaults: { firewall: { block_cidrs: [] } } }],
  ["custom bridge, /29", { networks: [{ name: "tiny", bridge: "br_tiny-0", subnet: "192.168.50.8/29" }] }, "tiny"],
  ["/16 with gateway at the top", { networks: [{ name: "big", subnet: "172.30.0.0/16", gateway: "172.30.255.254", dhcp_start: "172.30.1.0", dhcp_end: "172.30.200.255" }] }, "big"],
  ["63-character name, 15-character bridge", { networks: [{ name: long, bridge: "Br-0123456789_x" }] }, long],
];

describe.skipIf(!has("nft") || !isRoot)("nft -c -f", () => {
  for (const [what, doc, name] of configs) {
    test(what, () => {
      const file = join(dir, `${what.replace(/\W+/g, "_")}.nft`);
      writeFileSync(file, renderRuleset(resolveNetwork(doc, name)));
      const r = Bun.spawnSync(["nft", "-c", "-f", file], { stdout: "pipe", stderr: "pipe" });
      expect(`${r.exitCode} ${r.stderr.toString()}`.trim()).toBe("0");
    });
  }
  test("the checker rejects overlapping interval elements (why mergeCidrs exists: the oracle can fail)", () => {
    const file = join(dir, "overlap.nft");
    const text = renderRuleset(resolveNetwork({})).replace("elements = { ", "elements = { 10.1.0.0/16, ");
    writeFileSync(file, text);
    expect(Bun.spawnSync(["nft", "-c", "-f", file], { stdout: "pipe", stderr: "pipe" }).exitCode).not.toBe(0);
  });
});

// What nft lists back after loading each ruleset must equal what aivm expects, or `fw status` would report
// drift forever and `fw apply` would never say "unchanged". Loaded only inside a namespace this test creates.
describe.skipIf(!has("nft") || !has("ip") || !isRoot)("nft list after nft -f, in a private netns", () => {
  test("every config round-trips, and loading twice replaces the table", () => {
    const ns = `aivm-fwtest-${process.pid}-rt`;
    const sh = (argv: string[], input?: string) => Bun.spawnSync(argv, { stdin: input === undefined ? "ignore" : new TextEncoder().encode(input), stdout: "pipe", stderr: "pipe" });
    expect(sh(["ip", "netns", "add", ns]).exitCode).toBe(0);
    try {
      for (const [what, doc, name] of configs) {
        const net = resolveNetwork(doc, name);
        for (let i = 0; i < 2; i++) {
          const load = sh(["ip", "netns", "exec", ns, "nft", "-f", "-"], renderRuleset(net));
          expect({ what, code: load.exitCode, err: load.stderr.toString() }).toEqual({ what, code: 0, err: "" });
        }
        const listed = sh(["ip", "netns", "exec", ns, "nft", "list", "table", "inet", tableName(net.name)]).stdout.toString();
        expect({ what, drift: tableDrift(expectedTable(net), normalizeTable(listed)) }).toEqual({ what, drift: [] });
      }
    } finally {
      sh(["ip", "netns", "del", ns]);
    }
  }, 60000);
});
