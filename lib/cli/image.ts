import { resolvePaths } from "../config/resolve.ts";
import { applyPrune, cachedImage, humanSize, imageReferences, listCache, planPrune, verifyCache } from "../image.ts";
import { context, globalArgs, mutateArgs, readArgs, target, vmArg } from "./_shared.ts";
import { group, leaf } from "./command.ts";
import { out, outJson } from "../log.ts";
import { AivmError, EXIT, UsageError } from "../errors.ts";
import { log } from "../log.ts";
import { buildDebootstrap } from "../image-build.ts";
import { ensureImage } from "../image-fetch.ts";

const fetchCmd = leaf({
  name: "fetch",
  description: "download and verify the pinned base image",
  args: { ...mutateArgs, ...vmArg },
  run: async ({ args }) => {
    const ctx = context(args);
    const { vm } = await target(ctx, args, { what: "image fetch" });
    const r = await ensureImage(ctx.runner, vm.paths, vm.image);
    if (ctx.dryRun) return;
    if (!r.fetched) log.info(`already cached: ${r.image.sha256.slice(0, 12)}`);
    out(r.image.path);
  },
});

const build = leaf({
  name: "build",
  description: "build a Debian image offline with debootstrap",
  args: { ...mutateArgs, debootstrap: { type: "boolean", description: "build with debootstrap" }, suite: { type: "string", description: "Debian suite", default: "bookworm" }, mirror: { type: "string", description: "Debian mirror URL (default: the host's apt sources)", valueHint: "URL" } },
  run: async ({ args }) => {
    if (!args.debootstrap) throw new UsageError("image build", "say how to build: --debootstrap is the only builder", "aivm image build --debootstrap [--suite bookworm]");
    const suite = String(args.suite ?? "bookworm");
    if (!/^[a-z][a-z0-9-]{0,31}$/.test(suite)) throw new UsageError("image build", `${JSON.stringify(suite)} is not a Debian suite name`);
    const ctx = context(args);
    const r = await buildDebootstrap(ctx.runner, resolvePaths(ctx.store.doc), { suite, ...(args.mirror ? { mirror: String(args.mirror) } : {}) });
    if (ctx.dryRun) return;
    log.info(r.built ? `built ${r.image.sha256.slice(0, 12)}` : `already built: ${r.image.sha256.slice(0, 12)}`);
    out(r.image.path);
  },
});

const list = leaf({
  name: "list",
  description: "images in the cache",
  args: readArgs,
  run: ({ args }) => {
    const ctx = context(args);
    const entries = listCache(resolvePaths(ctx.store.doc), imageReferences(ctx.store.doc));
    if (ctx.json) return outJson(entries);
    if (!entries.length) return log.info("the image cache is empty");
    const rows = [["SHA256", "FORMAT", "SIZE", "KERNEL-BOOT", "USED-BY", "SOURCE"]];
    for (const e of entries) rows.push([e.sha256.slice(0, 12), e.format, humanSize(e.size), e.kernelBoot ? "yes" : "no", e.usedBy.join(",") || "-", e.source]);
    out(table(rows));
  },
});

const pathCmd = leaf({
  name: "path",
  description: "print the cached image path",
  args: { ...globalArgs, ...vmArg },
  run: async ({ args }) => {
    const ctx = context(args);
    const { vm } = await target(ctx, args, { what: "image path" });
    const img = cachedImage(vm.paths, vm.image.sha256);
    if (!img) throw new AivmError("image path", `not cached: run aivm image fetch${args.vm ? ` --vm ${vm.name}` : ""}`, EXIT.FAILED);
    out(img.path);
  },
});

const verify = leaf({
  name: "verify",
  description: "re-check cached images against their sha256",
  args: readArgs,
  run: async ({ args }) => {
    const ctx = context(args);
    const results = await verifyCache(resolvePaths(ctx.store.doc));
    if (ctx.json) outJson(results);
    else if (!results.length) log.info("the image cache is empty");
    else out(results.map((r) => (r.ok ? `ok       ${r.sha256} ${r.path}` : `MISMATCH ${r.sha256} ${r.path} got ${r.got}`)).join("\n"));
    const bad = results.filter((r) => !r.ok);
    if (bad.length) {
      throw new AivmError("image verify", `${bad.length} cached image(s) do not match their sha256: ${bad.map((r) => r.sha256.slice(0, 12)).join(", ")}`, EXIT.FAILED, "nothing was deleted; remove the file and run `aivm image fetch` again");
    }
  },
});

const prune = leaf({
  name: "prune",
  description: "remove images no VM uses",
  args: mutateArgs,
  run: async ({ args }) => {
    const ctx = context(args);
    const plan = planPrune(resolvePaths(ctx.store.doc), imageReferences(ctx.store.doc));
    const count = plan.images.length + plan.leftovers.length;
    if (!count) return log.info("nothing to prune");
    const lines = [
      ...plan.images.map((i) => `  image ${i.sha256} (${humanSize(i.size)}): ${i.files.length} file(s)`),
      ...plan.leftovers.map((p) => `  leftover ${p}`),
    ];
    log.info(`image prune would remove:\n${lines.join("\n")}`);
    if (!ctx.dryRun && !(await ctx.runner.confirm("image prune", `Remove ${count} item(s) from the image cache?`))) {
      throw new AivmError("image prune", "not approved; nothing removed", EXIT.FAILED);
    }
    const removed = await applyPrune(ctx.runner, plan);
    if (!ctx.dryRun) out(removed.join("\n"));
  },
});

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ")).join("\n");
}

export default group("image", "the content-addressed base image cache", { fetch: fetchCmd, build, list, path: pathCmd, verify, prune });
