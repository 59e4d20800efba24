// The git guard: a read-write shared folder that is a git repository must not become a way to run code on the host.
// The host user's next `git` there (or a shell prompt that runs `git status`) obeys what the repository's .git says:
// hooks, core.hooksPath, core.fsmonitor, core.sshCommand, filter drivers, diff.external, `!` aliases in .git/config,
// and a .git/commondir that points git at another directory's config (proven here: a commondir written in the guest
// made the host's `git status` run the guest's fsmonitor). So, by default, these are read-only to the guest, enforced
// on the host: .git becomes a mount point (it cannot be renamed away or replaced), and config, hooks, commondir,
// modules (submodules' own hooks and config), remotes and branches are read-only binds; the missing ones are created
// first (commondir holds ".", which git reads as "this directory": the repository works as before). The rest of .git
// stays writable, so the agent can commit. A gitfile (.git naming another directory) is made read-only as a whole.
import { join } from "node:path";
import type { AttachmentDoc } from "../config/model.ts";
import type { FileStat, Host } from "../host.ts";

/** Read-only inside .git: what git obeys rather than just stores. */
export const GUARDED = [
  { name: "config", kind: "file" as const },
  { name: "hooks", kind: "dir" as const },
  { name: "commondir", kind: "file" as const, content: ".\n" },
  { name: "modules", kind: "dir" as const },
  { name: "remotes", kind: "dir" as const },
  { name: "branches", kind: "dir" as const },
];

export type GuardState = { kind: "none"; why: string } | { kind: "dir" } | { kind: "gitfile" };

/** Whether and how an attachment is guarded, judged on the host folder as it is now. */
export function guardState(host: Host, att: AttachmentDoc): GuardState {
  if (att.mode !== "shared-root") return { kind: "none", why: att.mode === "git" ? "git mode: the guest works in its own clone" : "shared mode exports the folder itself" };
  if (att.access === "ro") return { kind: "none", why: "read-only folder: the guest writes nothing" };
  if (att.git_guard === "off") return { kind: "none", why: "turned off (git_guard = \"off\")" };
  const st = host.lstat(join(att.host_path, ".git"));
  if (!st) return { kind: "none", why: "not a git repository (a .git the guest creates later is the guest's: see docs/threat-model.md)" };
  if (st.isDirectory) return { kind: "dir" };
  if (st.isFile) return { kind: "gitfile" };
  return { kind: "none", why: ".git is neither a directory nor a file" };
}

/** Why the guard cannot be put in place on this repository (a planted symlink, a wrong type), or null. */
export function guardProblem(host: Host, att: AttachmentDoc): string | null {
  const dotgit = join(att.host_path, ".git");
  const st = host.lstat(dotgit);
  if (st?.isSymbolicLink) return `${dotgit} is a symbolic link; the git guard cannot protect it (replace it with the directory it points to, or pass --git-guard off)`;
  if (!st?.isDirectory) return null;
  for (const g of GUARDED) {
    const s = host.lstat(join(dotgit, g.name));
    if (!s) continue;
    const ok = g.kind === "dir" ? s.isDirectory : s.isFile;
    if (s.isSymbolicLink || !ok) return `${join(dotgit, g.name)} is ${s.isSymbolicLink ? "a symbolic link" : `not a ${g.kind === "dir" ? "directory" : "regular file"}`}; the git guard cannot protect it (check what put it there)`;
  }
  return null;
}

/** The guarded entries missing in .git, to create (owned like .git) before the guard binds them. */
export function missingGuarded(host: Host, att: AttachmentDoc): typeof GUARDED {
  return GUARDED.filter((g) => g.name !== "config" && !host.lstat(join(att.host_path, ".git", g.name)));
}

/** Every mount point the guard makes under a folder's root (`base`: the stage or export path of the folder). */
export function guardTargets(base: string, state: GuardState): string[] {
  if (state.kind === "gitfile") return [join(base, ".git")];
  if (state.kind !== "dir") return [];
  return [join(base, ".git"), ...GUARDED.map((g) => join(base, ".git", g.name))];
}

/** For `share list` and `status`: one phrase. */
export function describeGuard(state: GuardState): string {
  return state.kind === "none" ? `git guard: not applied (${state.why})` : `git guard: on (.git/${state.kind === "dir" ? "{config,hooks,commondir,modules,remotes,branches}" : " gitfile"} read-only to the guest)`;
}

export type { FileStat };
