import { networkNames, resolveNetwork, resolvePaths } from "../config/resolve.ts";
import { destroyNetwork, ensureNetwork, formatNetStatus, networkStatus, networkUsers, renderNetworkXml } from "../net.ts";
import { checkName } from "../validate.ts";
import { context, globalArgs, mutateArgs, readArgs } from "./_shared.ts";
import { group, leaf } from "./command.ts";
import { out, outJson } from "../log.ts";
import { networkState } from "../libvirt/virsh.ts";
import { log } from "../log.ts";

const name = { name: { type: "positional", required: false, description: "network name", valueHint: "NETWORK" } } as const;

function target(args: Record<string, any>) {
  const ctx = context(args);
  if (args.name !== undefined) checkName("network", String(args.name));
  const net = resolveNetwork(ctx.store.doc, args.name as string | undefined);
  return { ctx, net, uri: resolvePaths(ctx.store.doc).libvirtUri };
}

export default group("net", "libvirt NAT networks", {
  create: leaf({
    name: "create",
    description: "define, start and autostart a network (refuses a subnet that overlaps a host route)",
    args: { ...mutateArgs, ...name },
    run: async ({ args }) => {
      const { ctx, net, uri } = target(args);
      const r = await ensureNetwork(ctx.runner, uri, net);
      if (!ctx.dryRun) log.info(r === "unchanged" ? `network ${net.name}: already active, nothing changed` : `network ${net.name}: ${r}`);
    },
  }),
  destroy: leaf({
    name: "destroy",
    description: "stop and undefine a network",
    args: { ...mutateArgs, ...name, force: { type: "boolean", description: "even while VMs in the store use it" } },
    run: async ({ args }) => {
      const { ctx, net, uri } = target(args);
      const r = await destroyNetwork(ctx.runner, uri, net, { users: networkUsers(ctx.store.doc, net.name), force: !!args.force });
      if (r === "absent") log.info(`network ${net.name} is not defined; nothing to destroy`);
      else if (!ctx.dryRun) log.info(`network ${net.name}: destroyed`);
    },
  }),
  status: leaf({
    name: "status",
    description: "defined/active/autostart/bridge/leases",
    args: { ...readArgs, ...name },
    run: async ({ args }) => {
      const { ctx, net, uri } = target(args);
      const s = await networkStatus(ctx.runner, uri, net);
      if (ctx.json) outJson(s);
      else out(formatNetStatus(s));
    },
  }),
  list: leaf({
    name: "list",
    description: "networks in the store with their live state",
    args: readArgs,
    run: async ({ args }) => {
      const ctx = context(args);
      const uri = resolvePaths(ctx.store.doc).libvirtUri;
      const rows: { name: string; bridge: string; subnet: string; defined: boolean; active: boolean; autostart: boolean; vms: string[] }[] = [];
      for (const n of networkNames(ctx.store.doc)) {
        const net = resolveNetwork(ctx.store.doc, n);
        const st = await networkState(ctx.runner, uri, n);
        rows.push({ name: n, bridge: net.bridge, subnet: net.subnet, defined: st.defined, active: st.active, autostart: st.autostart, vms: networkUsers(ctx.store.doc, n) });
      }
      if (ctx.json) return outJson(rows);
      const state = (r: (typeof rows)[number]) => (!r.defined ? "absent" : r.active ? "active" : "inactive") + (r.defined && r.autostart ? ",autostart" : "");
      out(rows.map((r) => `${r.name}\t${state(r)}\t${r.bridge}\t${r.subnet}\t${r.vms.join(",") || "-"}`).join("\n"));
    },
  }),
  xml: leaf({
    name: "xml",
    description: "print the network XML (no libvirtd needed)",
    args: { ...globalArgs, ...name },
    run: ({ args }) => {
      const { net } = target(args);
      out(renderNetworkXml(net));
    },
  }),
});
