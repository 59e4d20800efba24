// aivm config init|show|path|edit|discover|import-python|lint
import { resolvePaths } from "../config/resolve.ts";
import { updateStore } from "../config/store.ts";
import { ConfigError, EXIT, PassThroughExit } from "../errors.ts";
import { discover } from "../flows/discover.ts";
import { importPython } from "../flows/import-python.ts";
import { editConfig, initConfig, lintProblems, resolvedView } from "../flows/init.ts";
import { log, out, outJson } from "../log.ts";
import { checkExplicitConfig, context, globalArgs, mutateArgs, readArgs } from "./_shared.ts";
import { group, leaf } from "./command.ts";

function noFile(path: string): ConfigError {
  return new ConfigError(`${path}: no such file`, "create it with `aivm config init`");
}

const initArgs = {
  ...mutateArgs,
  defaults: { type: "boolean", description: "accept the detected values without review" },
  force: { type: "boolean", description: "replace existing [defaults]" },
  "image-url": { type: "string", description: "pin this base image (https:// or file://) instead of Ubuntu 24.04", valueHint: "URL" },
  "image-sha256": { type: "string", description: "the sha256 of --image-url", valueHint: "SHA" },
} as const;

export default group("config", "the config store", {
  init: leaf({
    name: "init",
    description: "detect defaults (SSH key, free subnet, CPU/RAM/disk, base image) and write [defaults]",
    args: initArgs,
    run: async ({ args }) => {
      const ctx = context(args, { mayCreate: true });
      const wrote = await initConfig(ctx.runner, ctx.store, { defaults: !!args.defaults, force: !!args.force, imageUrl: args["image-url"], imageSha256: args["image-sha256"] });
      if (ctx.dryRun) return;
      log.info(wrote ? `wrote [defaults] to ${ctx.configPath}` : `${ctx.configPath} already holds these values`);
      out(ctx.configPath);
    },
  }),
  show: leaf({
    name: "show",
    description: "print the config (TOML as stored, or the resolved view with --json)",
    args: readArgs,
    run: ({ args }) => {
      const ctx = context(args);
      if (ctx.json) return outJson(resolvedView(ctx.configPath, ctx.store.doc));
      if (ctx.store.text === null) throw noFile(ctx.configPath);
      out(ctx.store.text);
    },
  }),
  path: leaf({
    name: "path",
    description: "print the config file path",
    args: globalArgs,
    run: ({ args }) => out(context(args, { loadConfig: false }).configPath),
  }),
  edit: leaf({
    name: "edit",
    description: "open the config in $VISUAL/$EDITOR, validate it, save it",
    args: globalArgs,
    run: async ({ args }) => {
      const ctx = context(args, { loadConfig: false });
      checkExplicitConfig(args, ctx.configPath);
      log.info((await editConfig(ctx.runner, ctx.configPath)) ? `saved ${ctx.configPath}` : "no changes");
    },
  }),
  discover: leaf({
    name: "discover",
    description: "list libvirt domains aivm does not manage and import the ones you accept (--yes: all) as [[vms]] records",
    args: mutateArgs,
    run: async ({ args }) => {
      const ctx = context(args);
      const uri = resolvePaths(ctx.store.doc).libvirtUri;
      const r = await discover(ctx.runner, uri, ctx.store.doc, {
        print: out,
        save: (change) => {
          const { wrote } = updateStore(ctx.configPath, change, { dryRun: ctx.dryRun });
          if (wrote) log.info(`recorded in ${ctx.configPath}`);
        },
      });
      if (!r.found.length) return log.info(`no libvirt domains outside the config store at ${uri}`);
      if (r.listedOnly) log.warn("no terminal to ask on and no --yes: listed only, nothing imported (re-run in a terminal to choose, or with --yes to import all)");
      log.info(`discovered ${r.found.length}, imported ${r.imported.length}${r.imported.length ? ` (${r.imported.join(", ")})` : ""}, skipped ${r.skipped.length}`);
      if (r.imported.length && !ctx.dryRun) {
        log.info("imported VMs are marked `imported = true`: aivm did not create their disks, seeds or host keys, pinned no host key (`aivm status` shows SSH as unknown) and removes nothing of them outside their vm_root directory; their networks were recorded with the firewall off");
      }
    },
  }),
  "import-python": leaf({
    name: "import-python",
    description: "carry a Python aivm store (schema 7; default ~/.config/aivm/config.toml) into this one; the Python store is only read",
    args: { ...mutateArgs, path: { type: "positional", required: false, description: "the Python aivm config.toml (its split fragments beside it are read too)", valueHint: "FILE" } },
    run: async ({ args }) => {
      const ctx = context(args, { loadConfig: false });
      const r = await importPython(ctx.runner, ctx.configPath, args.path as string | undefined, out);
      if (ctx.dryRun) return;
      if (r.wrote) log.info(`imported ${r.vms.length} VM(s), ${r.networks.length} network(s)${r.defaults ? " and [defaults]" : ""} into ${ctx.configPath}`);
      else log.info(`nothing to import into ${ctx.configPath}`);
    },
  }),
  lint: leaf({
    name: "lint",
    description: "list every problem in the config (file:line:col: problem); exit 78 when any",
    args: readArgs,
    run: ({ args }) => {
      const ctx = context(args, { loadConfig: false });
      const problems = lintProblems(ctx.configPath);
      if (ctx.json) outJson({ path: ctx.configPath, ok: problems.length === 0, problems });
      else if (problems.length) out(problems.map((p) => (p.line === null ? `${p.file}: ${p.message}` : `${p.file}:${p.line}:${p.col}: ${p.message}`)).join("\n"));
      else log.info(`${ctx.configPath}: no problems`);
      if (problems.length) throw new PassThroughExit(EXIT.CONFIG);
    },
  }),
});
