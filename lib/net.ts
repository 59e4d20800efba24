// libvirt NAT networks: render the XML, read the live state, and plan create/start/destroy as consent steps.
import templateText from "../templates/network.xml" with { type: "text" };
import type { Network, StoreDoc } from "./config/model.ts";
import { networkDrift } from "./drift.ts";
import { LiveNetConfig, parseLeases, parseNetworkXml, type Lease } from "./libvirt/parse.ts";
import { NetState, networkState, virshArgv, virshRead } from "./libvirt/virsh.ts";
import { printable, renderXml } from "./render.ts";
import type { Runner } from "./run.ts";
import { parseCidr, Cidr, cidrsOverlap, ipv4ToInt } from "./validate.ts";
import { UsageError } from "./errors.ts";
import { log } from "./log.ts";
import { Action } from "./steps.ts";

const template = templateText as unknown as string;

export function renderNetworkXml(net: Network): string {
  return renderXml(template, {
    name: net.name,
    bridge: net.bridge,
    gateway: net.gateway,
    netmask: net.netmask,
    dhcpStart: net.dhcpStart,
    dhcpEnd: net.dhcpEnd,
  });
}

async function warnDrift(runner: Runner, uri: string, net: Network, known?: LiveNetConfig | null): Promise<string[]> {
  let live = known ?? null;
  if (known === undefined) {
    const r = await virshRead(runner, uri, ["net-dumpxml", net.name]);
    if (r.exitCode === 0) live = parseNetworkXml(r.stdout);
  }
  if (!live) return [];
  const drift = networkDrift(net, live);
  if (drift.length) {
    log.warn(`network ${net.name} is defined differently from the config: ${drift.join("; ")}. ` +
      `aivm does not redefine it; to apply the config run \`aivm net destroy ${net.name}\` then \`aivm net create ${net.name}\``);
  }
  return drift;
}

export interface Route {
  prefix: string;
  cidr: Cidr;
  dev?: string;
  line: string;
}

const ROUTE_TYPES = new Set(["unicast", "local", "broadcast", "multicast", "throw", "unreachable", "prohibit", "blackhole", "nat", "anycast"]);

/** Parse `ip -4 route` output. `default` routes are skipped (they overlap everything by design). */
export function parseRoutes(text: string): Route[] {
  const routes: Route[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    const words = line.split(/\s+/);
    if (ROUTE_TYPES.has(words[0]!)) words.shift();
    const dst = words[0]!;
    if (dst === "default") continue;
    const prefix = dst.includes("/") ? dst : `${dst}/32`;
    const cidr = parseCidr(prefix) ?? parseLooseCidr(prefix);
    if (!cidr) continue;
    const i = words.indexOf("dev");
    routes.push({ prefix, cidr, dev: i >= 0 ? words[i + 1] : undefined, line });
  }
  return routes;
}

/** A prefix whose host bits are set (ip never prints those, but be lenient): mask them off. */
function parseLooseCidr(text: string): Cidr | undefined {
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(text);
  const ip = m ? ipv4ToInt(m[1]!) : undefined;
  const prefix = m ? Number(m[2]) : NaN;
  if (ip === undefined || !(prefix >= 0 && prefix <= 32)) return undefined;
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return { network: (ip & mask) >>> 0, prefix, size: 2 ** (32 - prefix) };
}

/** The first host route that overlaps the network's subnet, ignoring routes on the network's own bridge. */
export function overlappingRoute(net: Network, routes: Route[]): Route | undefined {
  const mine = parseCidr(net.subnet)!;
  return routes.find((r) => r.dev !== net.bridge && cidrsOverlap(mine, r.cidr));
}

export async function checkSubnetFree(runner: Runner, net: Network): Promise<void> {
  const r = await runner.read(["ip", "-4", "route"], { what: "ip -4 route" });
  const hit = overlappingRoute(net, parseRoutes(r.stdout));
  if (hit) {
    throw new UsageError(`network ${net.name}`, `subnet ${net.subnet} overlaps the host route \`${hit.line}\``,
      "pick a free subnet in [defaults.network] or [[networks]] (`aivm config edit`)");
  }
}

function netAction(uri: string, ...args: string[]): Action {
  return { kind: "run", argv: virshArgv(uri, ...args) };
}

/** The actions that create a network: define (from stdin), start, autostart. */
export function createNetworkActions(uri: string, net: Network): Action[] {
  return [
    { kind: "run", argv: virshArgv(uri, "net-define", "/dev/stdin"), input: renderNetworkXml(net) },
    netAction(uri, "net-start", net.name),
    netAction(uri, "net-autostart", net.name),
  ];
}

/** Define (from stdin), start and autostart when missing; start when inactive; nothing when active. `known`: state already read. */
export async function ensureNetwork(runner: Runner, uri: string, net: Network, known?: NetState & { xml?: LiveNetConfig | null }): Promise<"created" | "started" | "unchanged"> {
  const st = known ?? (await networkState(runner, uri, net.name));
  if (!st.defined) {
    await checkSubnetFree(runner, net);
    await runner.step({
      title: `Create network ${net.name}`,
      why: `the VMs' NAT network (${net.subnet} on bridge ${net.bridge})`,
      consent: true,
      actions: createNetworkActions(uri, net),
    });
    return "created";
  }
  await warnDrift(runner, uri, net, known ? (known.xml ?? null) : undefined);
  const autostart = st.persistent && !st.autostart ? [netAction(uri, "net-autostart", net.name)] : [];
  if (!st.persistent) log.warn(`network ${net.name} is transient (not persistent): it cannot autostart`);
  if (!st.active) {
    await runner.step({
      title: `Start network ${net.name}`,
      why: "it is defined but not running",
      consent: true,
      actions: [netAction(uri, "net-start", net.name), ...autostart],
    });
    return "started";
  }
  if (autostart.length) {
    await runner.step({ title: `Autostart network ${net.name}`, why: "so it comes back after a host reboot", consent: true, actions: autostart });
  }
  return "unchanged";
}

/** The VMs in the store that use a network. */
export function networkUsers(doc: StoreDoc, name: string): string[] {
  return (doc.vms ?? []).filter((v) => v.network === name).map((v) => v.name);
}

/** Stop and undefine a network. Refuses while recorded VMs use it, unless force. */
export async function destroyNetwork(runner: Runner, uri: string, net: Network, o: { users?: string[]; force?: boolean } = {}): Promise<"destroyed" | "absent"> {
  const users = o.users ?? [];
  if (users.length && !o.force) {
    throw new UsageError(`network ${net.name}`, `in use by ${users.join(", ")}`, "delete those VMs first, or pass --force");
  }
  const st = await networkState(runner, uri, net.name);
  if (!st.defined) return "absent";
  const actions: Action[] = [];
  if (st.active) actions.push(netAction(uri, "net-destroy", net.name));
  if (st.persistent) actions.push(netAction(uri, "net-undefine", net.name));
  await runner.step({ title: `Destroy network ${net.name}`, why: users.length ? `--force: still used by ${users.join(", ")}` : "no VM in the store uses it", consent: true, actions });
  return "destroyed";
}

export interface NetStatus {
  name: string;
  defined: boolean;
  active: boolean;
  autostart: boolean;
  persistent: boolean;
  bridge: string;
  subnet: string;
  gateway: string;
  drift: string[];
  leases: Lease[];
}

export async function networkStatus(runner: Runner, uri: string, net: Network, o: { leases?: boolean } = {}): Promise<NetStatus> {
  const st = await networkState(runner, uri, net.name);
  let drift: string[] = [];
  let leases: Lease[] = [];
  if (st.defined) {
    const x = await virshRead(runner, uri, ["net-dumpxml", net.name]);
    if (x.exitCode === 0) drift = networkDrift(net, parseNetworkXml(x.stdout));
  }
  if (st.active && o.leases !== false) {
    const l = await virshRead(runner, uri, ["net-dhcp-leases", net.name]);
    if (l.exitCode === 0) leases = parseLeases(l.stdout);
  }
  return {
    name: net.name,
    defined: st.defined,
    active: st.active,
    autostart: st.autostart,
    persistent: st.persistent,
    bridge: st.bridge ?? net.bridge,
    subnet: net.subnet,
    gateway: net.gateway,
    drift,
    leases,
  };
}

export function formatNetStatus(s: NetStatus): string {
  const yn = (b: boolean) => (b ? "yes" : "no");
  const lines = [
    `name: ${s.name}`,
    `defined: ${yn(s.defined)}`,
    `active: ${yn(s.active)}`,
    `autostart: ${yn(s.autostart)}`,
    `bridge: ${s.bridge}`,
    `subnet: ${s.subnet}`,
    `gateway: ${s.gateway}`,
    ...s.drift.map((d) => `drift: ${d}`),
    `leases: ${s.leases.length}`,
    ...s.leases.map((l) => `lease: ${l.ip} ${l.mac} ${printable(l.hostname ?? "-")} ${l.expiry}`),
  ];
  return lines.join("\n");
}
