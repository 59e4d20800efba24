// aivm share attach|detach|list|sync [DIR], and the top-level aivm attach|detach [DIR] (the same commands)
import { resolveVm, vmNames } from "../config/resolve.ts";
import { UsageError } from "../errors.ts";
import { attach, detach, recordedPath } from "../flows/attach.ts";
import { syncFolder } from "../flows/git-sync.ts";
import { log, out, outJson } from "../log.ts";
import { describeGuard, guardState } from "../share/git-guard.ts";
import { ACCESS, MODES, parseAccess, parseMode } from "../share/input.ts";
import { context, mutateArgs, readArgs, target, vmArg } from "./_shared.ts";
import { group, leaf } from "./command.ts";

const dir = { dir: { type: "positional", required: false, description: "host folder (default .)", valueHint: "DIR" } } as const;
const opts = {
  mode: { type: "enum", options: MODES, description: "shared-root (default) | shared | git", valueHint: "MODE" },
  access: { type: "enum", options: ACCESS, description: "rw (default) | ro", valueHint: "ACCESS" },
  "guest-dst": { type: "string", description: "guest path (default: the same absolute path as on the host)", valueHint: "GUEST_PATH" },
  "git-guard": { type: "enum", options: ["on", "off"] as string[], description: "on (default) | off: keep .git's config, hooks and commondir read-only to the guest", valueHint: "on|off" },
} as const;

function gitGuardArg(v: unknown): "on" | "off" | undefined {
  if (v === undefined) return undefined;
  if (v !== "on" && v !== "off") throw new UsageError("--git-guard", `${JSON.stringify(v)} is not on or off`);
  return v;
}

/** `share attach` and the top-level `attach` (what Python aivm users type): one command. */
export const attachCmd = leaf({
  name: "attach",
  description: "attach a folder (mounted at the same path in the guest by default)",
  args: { ...mutateArgs, ...vmArg, ...dir, ...opts },
  async run({ args }) {
    const ctx = context(args);
    const mode = parseMode(args.mode);
    const access = parseAccess(args.access);
    const gitGuard = gitGuardArg(args["git-guard"]);
    const { vm } = await target(ctx, args, { dir: args.dir, what: "attach" });
    const r = await attach(ctx.runner, ctx.configPath, vm, { dir: args.dir ?? ".", mode, access, guestDst: args["guest-dst"], gitGuard });
    if (ctx.dryRun) return;
    if (r.mounted) log.info(`${r.att.host_path} -> ${vm.name}:${r.att.guest_dst} (${r.att.mode}, ${r.att.access})${r.saved ? "; already attached, checked" : ""}`);
    else log.info(`${r.att.host_path}: ${r.note}`);
  },
});

/** `share detach` and the top-level `detach`. */
export const detachCmd = leaf({
  name: "detach",
  description: "detach a folder: guest mount, host bind and record",
  args: { ...mutateArgs, ...vmArg, ...dir },
  async run({ args }) {
    const ctx = context(args);
    const { vm } = await target(ctx, args, { dir: args.dir, what: "detach" });
    const r = await detach(ctx.runner, ctx.configPath, vm, args.dir ?? ".");
    if (!r) log.info(`${recordedPath(ctx.runner.host, args.dir ?? ".")} is not attached to ${vm.name}; nothing to do`);
    else if (!ctx.dryRun) log.info(`${r.att.host_path}: detached from ${vm.name}`);
  },
});

export default group("share", "host folders in the VM", {
  attach: attachCmd,
  detach: detachCmd,
  list: leaf({
    name: "list",
    description: "attached folders (tab-separated: vm, mode, access, host path, guest path, git guard)",
    args: { ...readArgs, ...vmArg },
    async run({ args }) {
      const ctx = context(args);
      const names = args.vm ? [args.vm as string] : (ctx.store.doc.vms ?? []).map((v) => v.name);
      const rows = names.flatMap((n) => resolveVm(ctx.store.doc, n).attachments.map((a) => {
        const g = guardState(ctx.runner.host, a);
        return { vm: n, ...a, guard: g.kind === "none" ? "off" : "on", guard_detail: describeGuard(g) };
      }));
      if (ctx.json) return outJson(rows);
      for (const r of rows) out([r.vm, r.mode, r.access, r.host_path, r.guest_dst, r.guard].join("\t"));
      if (!rows.length) log.info(`no attachments${names.length ? "" : ` (VMs: ${vmNames(ctx.store.doc).join(", ")})`}`);
    },
  }),
  sync: leaf({
    name: "sync",
    description: "git mode: --push host commits to the guest clone, or --pull guest commits to the host",
    args: { ...mutateArgs, ...vmArg, ...dir, push: { type: "boolean", description: "host -> guest" }, pull: { type: "boolean", description: "guest -> host (fast-forward only)" } },
    async run({ args }) {
      const ctx = context(args);
      if (!!args.push === !!args.pull) throw new UsageError("share sync", "pass exactly one of --push or --pull");
      const { vm } = await target(ctx, args, { dir: args.dir, what: "share sync" });
      const r = await syncFolder(ctx.runner, vm, args.dir ?? ".", args.push ? "push" : "pull");
      if (!ctx.dryRun) log.info(`${r.att.host_path} ${args.push ? "->" : "<-"} ${vm.name}:${r.att.guest_dst} (${r.branch})`);
    },
  }),
});
