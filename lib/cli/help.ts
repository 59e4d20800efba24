// aivm help plan | tree | raw
import { isDefaultConfigPath } from "../config/model.ts";
import type { VmChoice } from "../config/resolve.ts";
import { commandTree, formatTree } from "../command-tree.ts";
import { AivmError } from "../errors.ts";
import { formatRaw, rawPlan } from "../flows/raw.ts";
import { out, outJson } from "../log.ts";
import { shellQuote } from "../shell.ts";
import { context, globalArgs, readArgs, target, vmArg } from "./_shared.ts";
import { group, leaf } from "./command.ts";

export function planLines(configPath: string, vm?: { name: string; network: string; chosen: VmChoice }): string[] {
  const c = isDefaultConfigPath(configPath) ? "" : ` --config ${shellQuote(configPath)}`;
  const v = vm && vm.chosen.rule !== "defaults" && vm.chosen.rule !== "only" ? ` --vm ${vm.name}` : "";
  return [
    ...(vm ? [`# VM ${vm.name} on network ${vm.network} (chosen: ${vm.chosen.why}); \`aivm help raw\` prints the plain commands`] : []),
    `1. aivm config init${c}          # detect defaults: SSH key, free subnet, sizes, pinned image`,
    `2. aivm doctor${c}               # check the host can run aivm`,
    `3. aivm net create${c}${vm ? ` ${vm.network}` : ""}           # the VM's own NAT network`,
    `4. aivm fw apply${c}${vm ? ` ${vm.network}` : ""}             # its nftables isolation`,
    `5. aivm image fetch${c}${v}          # the pinned base image, verified`,
    `6. aivm vm create${c}${v} && aivm vm up${c}${v}   # overlay disk, seed, domain; start it`,
    `7. aivm vm wait${c}${v}              # IP, SSH with the pinned host key, cloud-init`,
    `8. aivm ssh-config upsert${c}${v}    # the ~/.ssh/config block`,
    `9. aivm code${c}${v} .               # open this folder in VS Code inside the VM`,
    `(steps 3-8 in one command: aivm up${c}${v})`,
  ];
}

export default group("help", "guides", {
  plan: leaf({
    name: "plan",
    description: "the explicit step-by-step flow, for the resolved VM",
    args: { ...globalArgs, ...vmArg },
    async run({ args }) {
      const ctx = context(args);
      const { vm, chosen } = await target(ctx, args, { what: "help plan" });
      out(planLines(ctx.configPath, { name: vm.name, network: vm.network.name, chosen }).join("\n"));
    },
  }),
  tree: leaf({
    name: "tree",
    description: "every command with its one-line purpose, as a tree",
    args: readArgs,
    async run({ args, data }) {
      const ctx = context(args, { loadConfig: false });
      if (!data.root) throw new AivmError("help tree", "the command tree was not handed over");
      const nodes = await commandTree(data.root);
      if (ctx.json) outJson(nodes.map((n) => ({ command: n.path ? `aivm ${n.path}` : "aivm", description: n.description, ...(n.positional ? { argument: n.positional.name } : {}), flags: n.flags.map((f) => f.flag) })));
      else out(formatTree(nodes));
    },
  }),
  raw: leaf({
    name: "raw",
    description: "the plain virsh / nft / qemu-img / ssh commands the plan amounts to, for doing it by hand",
    args: { ...readArgs, ...vmArg },
    async run({ args }) {
      const ctx = context(args);
      const { vm, chosen } = await target(ctx, args, { what: "help raw" });
      const sections = rawPlan(ctx.runner, vm);
      if (ctx.json) outJson({ vm: vm.name, chosen, network: vm.network.name, sections });
      else out(formatRaw(vm, chosen, sections));
    },
  }),
});
