// aivm doctor [--json]: can this host run aivm?
import { resolvePaths } from "../config/resolve.ts";
import { doctor, formatChecks } from "../doctor.ts";
import { AivmError, EXIT } from "../errors.ts";
import { out, outJson } from "../log.ts";
import { context, readArgs } from "./_shared.ts";
import { leaf } from "./command.ts";

export default leaf({
  name: "doctor",
  description: "can this host run aivm? (exit 0 only when everything needed is there)",
  args: readArgs,
  async run({ args }) {
    const ctx = context(args);
    const checks = await doctor(ctx.runner, resolvePaths(ctx.store.doc));
    if (ctx.json) outJson({ ok: checks.every((c) => c.ok || c.optional), checks });
    else out(formatChecks(checks).join("\n"));
    const failed = checks.filter((c) => !c.ok && !c.optional);
    if (failed.length) throw new AivmError("doctor", `${failed.length} check(s) failed: ${failed.map((c) => c.name).join(", ")}`, EXIT.FAILED);
  },
});
