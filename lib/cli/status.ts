import { bashScript, commandTree, fishScript, zshScript } from "../completion.ts";
import { isDefaultConfigPath } from "../config/model.ts";
import { networkNames, resolvePaths, vmNames } from "../config/resolve.ts";
import { AivmError, EXIT, UsageError } from "../errors.ts";
import { formatListing, listAll } from "../flows/list.ts";
import { collectStatus } from "../flows/status.ts";
import { DEBIAN_PACKAGES, formatChecks, installDepsStep, isDebianLike, readOsRelease } from "../host.ts";
import { log, out, outJson } from "../log.ts";
import { shellQuote } from "../run.ts";
import { formatStatus } from "../status-report.ts";
import { context, globalArgs, mutateArgs, readArgs, vmArg } from "./_shared.ts";
import { group, leaf } from "./command.ts";
import { root } from "./root.ts";
import { doctor as runDoctor } from "../host.ts";

export const status = leaf({
  name: "status",
  description: "every layer: true, false or unknown with a reason, and the next command to run (exit 0 whenever it could report)",
  args: { ...readArgs, ...vmArg, detail: { type: "boolean", description: "show the evidence, and re-hash the base image" } },
  async run({ args }) {
    const ctx = context(args);
    const report = await collectStatus(ctx.runner, ctx.store.doc, { configPath: ctx.configPath, vmName: args.vm as string | undefined, detail: !!args.detail });
    if (ctx.json) outJson(report);
    else out(formatStatus(report, { detail: !!args.detail }));
  },
});

export const list = leaf({
  name: "list",
  description: "VMs, networks and attachments (live state when libvirtd answers)",
  args: readArgs,
  async run({ args }) {
    const ctx = context(args);
    const l = await listAll(ctx.runner, ctx.store.doc);
    if (l.libvirt.error) log.warn(`live state unknown: ${l.libvirt.error}`);
    if (ctx.json) outJson(l);
    else out(formatListing(l));
  },
});

export const doctor = leaf({
  name: "doctor",
  description: "can this host run aivm? (exit 0 only when everything needed is there)",
  args: readArgs,
  async run({ args }) {
    const ctx = context(args);
    
    const checks = await runDoctor(ctx.runner, resolvePaths(ctx.store.doc));
    if (ctx.json) outJson({ ok: checks.every((c) => c.ok || c.optional), checks });
    else out(formatChecks(checks).join("\n"));
    const failed = checks.filter((c) => !c.ok && !c.optional);
    if (failed.length) throw new AivmError("doctor", `${failed.length} check(s) failed: ${failed.map((c) => c.name).join(", ")}`, EXIT.FAILED);
  },
});

export const host = group("host", "host set-up", {
  "install-deps": leaf({
    name: "install-deps",
    description: "install the host packages aivm needs (Debian/Ubuntu: apt-get, after asking)",
    args: mutateArgs,
    async run({ args }) {
      const ctx = context(args, { loadConfig: false });
      if (!isDebianLike(readOsRelease())) {
        throw new AivmError("host install-deps", "only Debian and Ubuntu are supported here", EXIT.FAILED, `install the equivalents of: ${DEBIAN_PACKAGES.join(" ")}`);
      }
      await ctx.runner.step(installDepsStep());
    },
  }),
});

export function planLines(configPath: string): string[] {
  const c = isDefaultConfigPath(configPath) ? "" : ` --config ${shellQuote(configPath)}`;
  return [
    `1. aivm config init${c}          # detect defaults: SSH key, free subnet, sizes, pinned image`,
    `2. aivm doctor${c}               # check the host can run aivm`,
    `3. aivm net create${c}           # the VM's own NAT network`,
    `4. aivm fw apply${c}             # its nftables isolation`,
    `5. aivm image fetch${c}          # the pinned base image, verified`,
    `6. aivm vm create${c} && aivm vm up${c}   # overlay disk, seed, domain; start it`,
    `7. aivm vm wait${c}              # IP, SSH with the pinned host key, cloud-init`,
    `8. aivm ssh-config upsert${c}    # the ~/.ssh/config block`,
    `9. aivm code${c} .               # open this folder in VS Code inside the VM`,
    `(steps 3-8 in one command: aivm up${c})`,
  ];
}

export const help = group("help", "guides", {
  plan: leaf({
    name: "plan",
    description: "the explicit step-by-step flow",
    args: globalArgs,
    run({ args }) {
      const ctx = context(args, { loadConfig: false });
      out(planLines(ctx.configPath).join("\n"));
    },
  }),
});

export const completion = leaf({
  name: "completion",
  description: "print a shell completion script: bash | zsh | fish",
  args: {
    ...globalArgs,
    shell: { type: "positional", required: false, description: "bash | zsh | fish", valueHint: "SHELL" },
    list: { type: "string", description: "print names for completion: vms | networks", valueHint: "WHAT" },
  },
  async run({ args }) {
    if (args.list) {
      const ctx = context(args);
      if (args.list === "vms") out(vmNames(ctx.store.doc).join("\n"));
      else if (args.list === "networks") out(networkNames(ctx.store.doc).join("\n"));
      else throw new UsageError("completion --list", `${args.list} is not one of: vms, networks`);
      return;
    }
    const shell = args.shell as string | undefined;
    if (!shell || !["bash", "zsh", "fish"].includes(shell)) throw new UsageError("completion", `${shell ? `${shell} is not` : "name"} one of: bash, zsh, fish`);
    
    
    const nodes = await commandTree(root);
    out(shell === "bash" ? bashScript(nodes) : shell === "zsh" ? zshScript(nodes) : fishScript(nodes));
  },
});
