import { group, pending } from "./command.ts";
import { globalArgs, readArgs, mutateArgs } from "./_shared.ts";

export default group("config", "the config store", {
  init: pending("config init", "detect defaults and write [defaults]", { ...mutateArgs, defaults: { type: "boolean", description: "accept detected values without review" }, force: { type: "boolean", description: "replace existing [defaults]" } }),
  show: pending("config show", "print the config (TOML, or --json)", readArgs),
  path: pending("config path", "print the config file path", globalArgs),
  edit: pending("config edit", "open the config in $EDITOR and validate it", globalArgs),
  lint: pending("config lint", "list every problem in the config", readArgs),
});
