// aivm host install-deps
import { DEBIAN_PACKAGES, installDepsStep, isDebianLike, readOsRelease } from "../doctor.ts";
import { AivmError, EXIT } from "../errors.ts";
import { context, mutateArgs } from "./_shared.ts";
import { group, leaf } from "./command.ts";

export default group("host", "host set-up", {
  "install-deps": leaf({
    name: "install-deps",
    description: "install the host packages aivm needs (Debian/Ubuntu: apt-get, after asking)",
    args: mutateArgs,
    async run({ args }) {
      const ctx = context(args, { loadConfig: false });
      if (!isDebianLike(readOsRelease(ctx.runner.host))) {
        throw new AivmError("host install-deps", "only Debian and Ubuntu are supported here", EXIT.FAILED, `install the equivalents of: ${DEBIAN_PACKAGES.join(" ")}`);
      }
      await ctx.runner.step(installDepsStep());
    },
  }),
});
