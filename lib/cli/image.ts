import { group, pending } from "./command.ts";
import { globalArgs, readArgs, mutateArgs, vmArg } from "./_shared.ts";

export default group("image", "the content-addressed base image cache", {
  fetch: pending("image fetch", "download and verify the pinned base image", { ...mutateArgs, ...vmArg }),
  build: pending("image build", "build a Debian image offline with debootstrap", { ...mutateArgs, debootstrap: { type: "boolean", description: "build with debootstrap" }, suite: { type: "string", description: "Debian suite", default: "bookworm" } }),
  list: pending("image list", "images in the cache", readArgs),
  path: pending("image path", "print the cached image path", { ...globalArgs, ...vmArg }),
  verify: pending("image verify", "re-check cached images against their sha256", readArgs),
  prune: pending("image prune", "remove images no VM uses", mutateArgs),
});
