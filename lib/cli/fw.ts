import { resolveNetwork } from "../config/resolve.ts";
import { applyFirewall, firewallStatus, formatFwStatus, removeFirewall, renderRuleset, tableName } from "../fw.ts";
import { checkName } from "../validate.ts";
import { context, globalArgs, mutateArgs, readArgs } from "./_shared.ts";
import { group, leaf } from "./command.ts";
import { out, outJson } from "../log.ts";
import { log } from "../log.ts";

const name = { name: { type: "positional", required: false, description: "network name", valueHint: "NETWORK" } } as const;

function target(args: Record<string, any>) {
  const ctx = context(args);
  if (args.name !== undefined) checkName("network", String(args.name));
  return { ctx, net: resolveNetwork(ctx.store.doc, args.name as string | undefined) };
}

export default group("fw", "nftables isolation per network", {
  apply: leaf({
    name: "apply",
    description: "replace the network's nftables table atomically (one nft -f transaction)",
    args: { ...mutateArgs, ...name },
    run: async ({ args }) => {
      const { ctx, net } = target(args);
      const r = await applyFirewall(ctx.runner, net);
      const table = `inet ${tableName(net.name)}`;
      if (r === "disabled") log.warn(`firewall of network ${net.name} is disabled in the config; nothing applied`);
      else if (r === "unchanged") log.info(`${table} already matches the config, nothing changed`);
      else if (!ctx.dryRun) log.info(`${table} applied`);
    },
  }),
  remove: leaf({
    name: "remove",
    description: "delete the network's nftables table",
    args: { ...mutateArgs, ...name },
    run: async ({ args }) => {
      const { ctx, net } = target(args);
      const r = await removeFirewall(ctx.runner, net);
      const table = `inet ${tableName(net.name)}`;
      if (r === "absent") log.info(`${table} is not loaded; nothing to remove`);
      else if (!ctx.dryRun) log.info(`${table} removed`);
    },
  }),
  status: leaf({
    name: "status",
    description: "compare the live table with what the config renders",
    args: { ...readArgs, ...name },
    run: async ({ args }) => {
      const { ctx, net } = target(args);
      const s = await firewallStatus(ctx.runner, net);
      if (ctx.json) outJson(s);
      else out(formatFwStatus(s));
    },
  }),
  rules: leaf({
    name: "rules",
    description: "print the nftables ruleset (no root needed)",
    args: { ...globalArgs, ...name },
    run: ({ args }) => {
      const { net } = target(args);
      out(renderRuleset(net));
    },
  }),
});
