// aivm up: network, firewall, image, VM, wait, ssh-config in one idempotent command
import { logUp, up as bringUp } from "../flows/up.ts";
import { outJson } from "../log.ts";
import { context, jsonArg, mutateArgs, target, vmArg } from "./_shared.ts";
import { leaf } from "./command.ts";

export default leaf({
  name: "up",
  description: "network, firewall, image, VM, wait, ssh-config: all in one (idempotent)",
  args: { ...mutateArgs, ...vmArg, ...jsonArg },
  async run({ args }) {
    const ctx = context(args);
    const { vm } = await target(ctx, args, { what: "up" });
    const report = await bringUp(ctx.runner, ctx.configPath, ctx.store.doc, vm);
    if (ctx.json) outJson(report);
    logUp(report);
  },
});
