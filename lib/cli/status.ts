// aivm status [--vm NAME] [--detail] [--json]
import { collectStatus } from "../flows/status.ts";
import { out, outJson } from "../log.ts";
import { formatStatus } from "../status-report.ts";
import { context, readArgs, target, vmArg } from "./_shared.ts";
import { leaf } from "./command.ts";

export default leaf({
  name: "status",
  description: "every layer: true, false or unknown with a reason, and the next command to run (exit 0 whenever it could report)",
  args: { ...readArgs, ...vmArg, detail: { type: "boolean", description: "show the evidence, and re-hash the base image" } },
  async run({ args }) {
    const ctx = context(args);
    const { chosen } = await target(ctx, args, { what: "status" });
    const vmName = chosen.rule === "defaults" ? undefined : chosen.name;
    const report = await collectStatus(ctx.runner, ctx.store.doc, { configPath: ctx.configPath, vmName, chosen, detail: !!args.detail });
    if (ctx.json) outJson(report);
    else out(formatStatus(report, { detail: !!args.detail }));
  },
});
