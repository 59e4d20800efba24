import { leaf, pending } from "./command.ts";
import { context, jsonArg, mutateArgs, vmArg } from "./_shared.ts";
import { resolveVm } from "../config.ts";
import { outJson } from "../log.ts";
const dir = { dir: { type: "positional", required: false, description: "project folder (default .)", valueHint: "DIR" } } as const;

export const up = leaf({
  name: "up",
  description: "network, firewall, image, VM, wait, ssh-config: all in one (idempotent)",
  args: { ...mutateArgs, ...vmArg, ...jsonArg },
  async run({ args }) {
    const ctx = context(args);
    const vm = resolveVm(ctx.store.doc, args.vm);
    const { up: bringUp, logUp } = await import("../up.ts");
    const report = await bringUp(ctx.runner, ctx.configPath, ctx.store.doc, vm);
    if (ctx.json) outJson(report);
    logUp(report);
  },
});
export const code = pending("code", "open DIR in VS Code inside the VM", { ...mutateArgs, ...vmArg, ...dir });
export const ssh = pending("ssh", "a shell in the VM at DIR [-- CMD...]", { ...mutateArgs, ...vmArg, ...dir });
