// nftables isolation: one table per network, rendered from the config and replaced atomically in one `nft -f`.
import template from "../templates/nftables.nft" with { type: "text" };
import type { Network } from "./config/model.ts";
import { AivmError, lastLine } from "./errors.ts";
import { fill, nftString } from "./render.ts";
import type { Runner } from "./run.ts";
import type { Action } from "./steps.ts";
import { BRIDGE_RE, intToIpv4, ipv4ToInt, NAME_RE, parseCidr, portProblem, type Cidr } from "./validate.ts";

/** `inet aivm_<network name with - as _>` (network names are [a-z0-9-], so the mapping is one-to-one). */
export function tableName(network: string): string {
  if (!NAME_RE.test(network)) throw new Error(`invalid network name ${JSON.stringify(network)}`);
  return `aivm_${network.replaceAll("-", "_")}`;
}

/** Sorted, with CIDRs contained in another dropped (an nft interval set refuses overlaps). /32 printed bare, as nft lists it. */
export function mergeCidrs(cidrs: string[]): string[] {
  const parsed = cidrs.map((c) => {
    const p = parseCidr(c);
    if (!p) throw new Error(`invalid CIDR ${JSON.stringify(c)}`);
    return p;
  });
  parsed.sort((a, b) => a.network - b.network || a.prefix - b.prefix);
  const kept: Cidr[] = [];
  for (const c of parsed) {
    const last = kept[kept.length - 1];
    if (last && c.network >= last.network && c.network + c.size <= last.network + last.size) continue;
    kept.push(c);
  }
  return kept.map((c) => (c.prefix === 32 ? intToIpv4(c.network) : `${intToIpv4(c.network)}/${c.prefix}`));
}

function ports(list: number[]): string {
  for (const p of list) {
    const e = portProblem(p);
    if (e) throw new Error(e);
  }
  const sorted = [...new Set(list)].sort((a, b) => a - b);
  return sorted.length === 1 ? String(sorted[0]) : `{ ${sorted.join(", ")} }`;
}

function address(ip: string): string {
  if (ipv4ToInt(ip) === undefined) throw new Error(`invalid IPv4 address ${JSON.stringify(ip)}`);
  return ip;
}

/** The nft -f document for one network: create-if-missing + delete + the full table, one transaction. */
export function renderRuleset(net: Network): string {
  const table = tableName(net.name);
  if (!BRIDGE_RE.test(net.bridge)) throw new Error(`invalid bridge name ${JSON.stringify(net.bridge)}`);
  if (!parseCidr(net.subnet)) throw new Error(`invalid subnet ${JSON.stringify(net.subnet)}`);
  const fw = net.firewall;
  const blocked = mergeCidrs(fw.blockCidrs);
  const blockSet = blocked.length
    ? `\t# destinations guests may not reach (replies to them excepted)\n\tset block_v4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { ${blocked.join(", ")} }\n\t}\n\n`
    : "";
  const blockRule = blocked.length ? "\t\tip daddr @block_v4 drop\n" : "";
  let allowRules = "";
  if (fw.allowTcp.length) allowRules += `\t\t# allow_tcp_ports: host services the guests may use\n\t\ttcp dport ${ports(fw.allowTcp)} accept\n`;
  if (fw.allowUdp.length) allowRules += `\t\t# allow_udp_ports\n\t\tudp dport ${ports(fw.allowUdp)} accept\n`;
  return fill(template, {
    network: net.name,
    table,
    bridge: net.bridge,
    subnet: net.subnet,
    gateway: address(net.gateway),
    blockSet,
    blockRule,
    allowRules,
  }, (v) => nftString(String(v)));
}

// ---------- comparing with the live table ----------

/**
 * Canonical lines of one table as `nft list table` prints it: comments and blank lines dropped,
 * indentation trimmed, wrapped set elements joined.
 */
export function normalizeTable(text: string): string[] {
  const lines: string[] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    pending = pending ? `${pending} ${line}` : line;
    if (pending.endsWith(",")) continue;
    lines.push(pending);
    pending = "";
  }
  if (pending) lines.push(pending);
  return lines;
}

/** The table block of a rendered ruleset (what `nft list table` should print back after applying it). */
export function expectedTable(net: Network): string[] {
  const doc = renderRuleset(net);
  const head = `table inet ${tableName(net.name)} {\n`;
  return normalizeTable(doc.slice(doc.lastIndexOf(head)));
}

/** What differs between the live table and the expected one, one phrase per line ([] when equal). */
export function tableDrift(expected: string[], live: string[]): string[] {
  const count = (xs: string[]) => xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map<string, number>());
  const have = count(live);
  const want = count(expected);
  const drift: string[] = [];
  for (const x of expected) {
    const n = have.get(x) ?? 0;
    if (n > 0) have.set(x, n - 1);
    else drift.push(`missing: ${x}`);
  }
  for (const x of live) {
    const n = want.get(x) ?? 0;
    if (n > 0) want.set(x, n - 1);
    else drift.push(`unexpected: ${x}`);
  }
  if (!drift.length && expected.join("\n") !== live.join("\n")) drift.push("rules are in a different order");
  return drift;
}

const NO_TABLE = /No such file or directory|does not exist/i;

/** The live table's text, or null when it does not exist. */
export async function liveTable(runner: Runner, table: string): Promise<string | null> {
  const r = await runner.read(["nft", "list", "table", "inet", table], { privileged: true, nothrow: true });
  if (r.exitCode === 0) return r.stdout;
  if (NO_TABLE.test(r.stderr)) return null;
  if (r.exitCode === 127) throw new AivmError("nft", "nft: command not found", 69, "install nftables (`aivm host install-deps`)");
  throw new AivmError(`nft list table inet ${table}`, lastLine(r.stderr) || `exited ${r.exitCode}`);
}

export interface FwStatus {
  network: string;
  table: string;
  enabled: boolean;
  present: boolean;
  equal: boolean;
  drift: string[];
}

export async function firewallStatus(runner: Runner, net: Network): Promise<FwStatus> {
  const table = tableName(net.name);
  const live = await liveTable(runner, table);
  const expected = net.firewall.enabled ? expectedTable(net) : [];
  const drift = live === null
    ? (net.firewall.enabled ? ["table is absent"] : [])
    : net.firewall.enabled ? tableDrift(expected, normalizeTable(live)) : ["table is present but the firewall is disabled in the config"];
  return { network: net.name, table, enabled: net.firewall.enabled, present: live !== null, equal: drift.length === 0, drift };
}

export function formatFwStatus(s: FwStatus): string {
  const yn = (b: boolean) => (b ? "yes" : "no");
  return [
    `network: ${s.network}`,
    `table: inet ${s.table}`,
    `enabled: ${yn(s.enabled)}`,
    `present: ${yn(s.present)}`,
    `equal: ${yn(s.equal)}`,
    ...s.drift.map((d) => `drift: ${d}`),
  ].join("\n");
}

/** The action that loads (or atomically replaces) the network's table. */
export function loadRulesetAction(net: Network): Action {
  return { kind: "run", argv: ["nft", "-f", "-"], input: renderRuleset(net), privileged: true };
}

/** Load the rendered table when the live one differs (one atomic `nft -f -`). */
export async function applyFirewall(runner: Runner, net: Network): Promise<"applied" | "unchanged" | "disabled"> {
  if (!net.firewall.enabled) return "disabled";
  const table = tableName(net.name);
  const live = await liveTable(runner, table);
  if (live !== null && tableDrift(expectedTable(net), normalizeTable(live)).length === 0) return "unchanged";
  await runner.step({
    title: `${live === null ? "Load" : "Replace"} firewall table inet ${table}`,
    why: `isolate the guests on ${net.bridge} from the host and from ${net.firewall.blockCidrs.length ? "blocked ranges" : "the host"}`,
    consent: true,
    actions: [loadRulesetAction(net)],
  });
  return "applied";
}

/** Delete the network's table. */
export async function removeFirewall(runner: Runner, net: Network): Promise<"removed" | "absent"> {
  const table = tableName(net.name);
  if ((await liveTable(runner, table)) === null) return "absent";
  await runner.step({
    title: `Remove firewall table inet ${table}`,
    why: `the isolation rules of network ${net.name}`,
    consent: true,
    actions: [{ kind: "run", argv: ["nft", "delete", "table", "inet", table], privileged: true }],
  });
  return "removed";
}
