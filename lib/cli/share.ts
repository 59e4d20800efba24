import { existsSync, realpathSync } from "node:fs";
import { resolve } from "node:path";
import type { AttachmentDoc, Vm } from "../config/model.ts";
import { acquireLock } from "../lock.ts";
import { vmFiles } from "../vm/files.ts";
import { findAttachment, hostDir, overlapping, parseAccess, parseMode, planAttachment } from "../share/input.ts";
import { AivmError, EXIT, UsageError } from "../errors.ts";
import { group, leaf } from "./command.ts";
import { context, mutateArgs, readArgs, vmArg } from "./_shared.ts";
import { resolveVm, vmNames } from "../config/resolve.ts";
import { currentBranch, gitSyncArgv, gitTopLevel } from "../git.ts";
import { approveSensitive } from "../share/preflight.ts";
import { attachFolder, detachFolder } from "../flows/attach.ts";
import { out, outJson } from "../log.ts";
import { shellJoin, shellQuote } from "../run.ts";
import { defaultSshConfigFile } from "../ssh-config.ts";
import { log } from "../log.ts";

const dir = { dir: { type: "positional", required: false, description: "host folder (default .)", valueHint: "DIR" } } as const;
const opts = {
  mode: { type: "string", description: "shared-root (default) | shared | git" },
  access: { type: "string", description: "rw (default) | ro" },
  "guest-dst": { type: "string", description: "guest path (default: the same absolute path as on the host)", valueHint: "PATH" },
} as const;

/** The per-VM lock (only when the VM directory exists: attaching to a VM not created yet creates nothing). */
export function lockVm(vm: Vm, dryRun: boolean, what: string): () => void {
  if (dryRun || !existsSync(vm.dir)) return () => {};
  return acquireLock(vmFiles(vm).lock, { waitMs: 0, what, reentrant: true });
}

/** A folder given to detach/sync: resolved when it exists, else taken lexically (a deleted folder can still be detached). */
function recordedPath(d: string): string {
  const abs = resolve(d);
  try {
    return realpathSync(abs);
  } catch {
    return abs;
  }
}

function savedAttachment(vm: Vm, d: string, what: string): AttachmentDoc | undefined {
  const p = recordedPath(d);
  const att = findAttachment(vm, p);
  if (!att && !existsSync(p)) throw new UsageError(what, `${d}: no such directory, and nothing attached there`);
  return att;
}

export default group("share", "host folders in the VM", {
  attach: leaf({
    name: "attach",
    description: "attach a folder (mounted at the same path in the guest by default)",
    args: { ...mutateArgs, ...vmArg, ...dir, ...opts },
    async run({ args }) {
      const ctx = context(args);
      const vm = resolveVm(ctx.store.doc, args.vm);
      // every input check first: nothing changes on bad input
      const mode = parseMode(args.mode);
      const access = parseAccess(args.access);
      let hostPath = hostDir("share attach", args.dir ?? ".");
      if ((mode ?? findAttachment(vm, hostPath)?.mode) === "git") hostPath = await gitTopLevel(ctx.runner, hostPath);
      const { att, saved } = planAttachment(vm, hostPath, { mode, access, guestDst: args["guest-dst"] });
      await approveSensitive(ctx.runner, "share attach", hostPath);
      const over = overlapping(vm, hostPath);
      if (over.length && !saved && !ctx.dryRun && !(await ctx.runner.confirm("share attach", `${hostPath} overlaps ${over.map((a) => a.host_path).join(", ")} (already attached). Continue with an overlapping attachment?`))) {
        throw new AivmError("share attach", "not approved", EXIT.FAILED);
      }
      const release = lockVm(vm, ctx.dryRun, `share attach ${vm.name}`);
      try {
        const r = await attachFolder(ctx.runner, ctx.configPath, vm, att);
        if (ctx.dryRun) return;
        if (r.mounted) log.info(`${att.host_path} -> ${vm.name}:${att.guest_dst} (${att.mode}, ${att.access})${saved ? "; already attached, checked" : ""}`);
        else log.info(`${att.host_path}: ${r.note}`);
      } finally {
        release();
      }
    },
  }),
  detach: leaf({
    name: "detach",
    description: "detach a folder: guest mount, host bind and record",
    args: { ...mutateArgs, ...vmArg, ...dir },
    async run({ args }) {
      const ctx = context(args);
      const vm = resolveVm(ctx.store.doc, args.vm);
      const att = savedAttachment(vm, args.dir ?? ".", "share detach");
      if (!att) {
        log.info(`${recordedPath(args.dir ?? ".")} is not attached to ${vm.name}; nothing to do`);
        return;
      }
      const release = lockVm(vm, ctx.dryRun, `share detach ${vm.name}`);
      try {
        const r = await detachFolder(ctx.runner, ctx.configPath, vm, att);
        if (!r.removed) throw new AivmError("share detach", `${att.host_path}: ${r.problems.join("; ")}`, EXIT.FAILED, "the attachment record is kept; fix the cause and run detach again");
        if (!ctx.dryRun) log.info(`${att.host_path}: detached from ${vm.name}`);
      } finally {
        release();
      }
    },
  }),
  list: leaf({
    name: "list",
    description: "attached folders (tab-separated: vm, mode, access, host path, guest path)",
    args: { ...readArgs, ...vmArg },
    async run({ args }) {
      const ctx = context(args);
      const names = args.vm ? [args.vm as string] : (ctx.store.doc.vms ?? []).map((v) => v.name);
      const rows = names.flatMap((n) => resolveVm(ctx.store.doc, n).attachments.map((a) => ({ vm: n, ...a })));
      if (ctx.json) return outJson(rows);
      for (const r of rows) out([r.vm, r.mode, r.access, r.host_path, r.guest_dst].join("\t"));
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
      const vm = resolveVm(ctx.store.doc, args.vm);
      const d = hostDir("share sync", args.dir ?? ".");
      const top = (await gitTopLevel(ctx.runner, d).catch(() => d)) as string;
      const att = findAttachment(vm, top) ?? findAttachment(vm, d);
      if (!att) throw new UsageError("share sync", `${top} is not attached to ${vm.name}`, `attach it: aivm share attach --mode git ${top}`);
      if (att.mode !== "git") throw new UsageError("share sync", `${att.host_path} is attached in ${att.mode} mode: it is live already; sync is for --mode git`);
      const branch = await currentBranch(ctx.runner, att.host_path);
      for (const argv of gitSyncArgv(vm, att, args.push ? "push" : "pull", branch)) {
        log.debug(shellJoin(argv));
        // git's ssh finds the VM's alias in the ssh config aivm wrote (ssh itself reads the passwd home, not $HOME)
        await ctx.runner.exec(argv, { what: `share sync ${args.push ? "--push" : "--pull"}`, env: { GIT_SSH_COMMAND: `ssh -F ${shellQuote(defaultSshConfigFile())}` } });
      }
      if (!ctx.dryRun) log.info(`${att.host_path} ${args.push ? "->" : "<-"} ${vm.name}:${att.guest_dst} (${branch})`);
    },
  }),
});
