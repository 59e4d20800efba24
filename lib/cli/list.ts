// aivm list [--section vms|networks|attachments]... [--json]
import { formatListing, listAll, SECTIONS, type Section } from "../flows/list.ts";
import { UsageError } from "../errors.ts";
import { log, out, outJson } from "../log.ts";
import { context, readArgs, repeated } from "./_shared.ts";
import { leaf } from "./command.ts";

export default leaf({
  name: "list",
  description: "VMs, networks and attachments (live state when libvirtd answers)",
  args: {
    ...readArgs,
    section: { type: "enum", options: [...SECTIONS], description: "only this section (repeatable): vms | networks | attachments", valueHint: "SECTION" },
  },
  async run({ args, rawArgs }) {
    const ctx = context(args);
    const sections = [...new Set(repeated(rawArgs, "section"))] as Section[];
    const bad = sections.find((s) => !SECTIONS.includes(s));
    if (bad !== undefined) throw new UsageError("list --section", `${JSON.stringify(bad)} is not one of: ${SECTIONS.join(", ")}`);
    const l = await listAll(ctx.runner, ctx.store.doc, { sections: sections.length ? sections : [...SECTIONS] });
    if (l.libvirt?.error) log.warn(`live state unknown: ${l.libvirt.error}`);
    if (ctx.json) outJson(l);
    else out(formatListing(l));
  },
});
