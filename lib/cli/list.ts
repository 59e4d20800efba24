// aivm list [--json]
import { formatListing, listAll } from "../flows/list.ts";
import { log, out, outJson } from "../log.ts";
import { context, readArgs } from "./_shared.ts";
import { leaf } from "./command.ts";

export default leaf({
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
