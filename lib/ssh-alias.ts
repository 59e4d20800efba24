// What `ssh <vm>` really does with the user's ~/.ssh/config: ssh takes the FIRST value it finds for each option, so a
// `Host <vm>` (or `Host *`) stanza above aivm's managed block silently wins over it (another address, no pinned host
// key check). `ssh -G` prints the options ssh would use, without connecting; aivm compares them with its block.
import type { Vm } from "./config/model.ts";
import type { Runner } from "./run.ts";

/** `ssh -G` output: option -> first value (keys lower case, as ssh prints them). */
export function parseSshG(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split("\n")) {
    const i = line.indexOf(" ");
    if (i > 0 && !m.has(line.slice(0, i))) m.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return m;
}

/** Pure: what differs between what ssh would use for `ssh <vm>` and aivm's block, one phrase each. */
export function aliasProblems(vm: Vm, ip: string, knownHosts: string, g: Map<string, string>): string[] {
  const p: string[] = [];
  if (g.get("hostname") !== ip) p.push(`HostName is ${g.get("hostname") ?? "unset"}, not ${ip}`);
  if (g.get("user") !== vm.user) p.push(`User is ${g.get("user") ?? "unset"}, not ${vm.user}`);
  if (g.get("stricthostkeychecking") !== "true") p.push(`StrictHostKeyChecking is ${g.get("stricthostkeychecking") ?? "unset"}, not yes (the pinned host key is not enforced)`);
  if (g.get("hostkeyalias") !== vm.name) p.push(`HostKeyAlias is ${g.get("hostkeyalias") ?? "unset"}, not ${vm.name}`);
  if (!(g.get("userknownhostsfile") ?? "").split(/\s+/).includes(knownHosts)) p.push(`UserKnownHostsFile is ${g.get("userknownhostsfile") ?? "unset"}, not ${knownHosts}`);
  return p;
}

/** Does `ssh <vm>` (with this config file) reach the VM with aivm's options? The problems, or [] (also when ssh cannot tell). */
export async function checkAlias(runner: Runner, vm: Vm, ip: string, knownHosts: string, file: string): Promise<string[]> {
  const r = await runner.read(["ssh", "-G", "-F", file, vm.name], { nothrow: true, timeoutMs: 10_000 });
  if (r.exitCode !== 0) return [];
  return aliasProblems(vm, ip, knownHosts, parseSshG(r.stdout));
}

/** The one line that says what overrides aivm's block and how to fix it. */
export function aliasAdvice(vm: Vm, file: string, problems: string[]): string {
  return `\`ssh ${vm.name}\` does not use aivm's block in ${file}: ${problems.join("; ")}; an entry above it (Host ${vm.name}, or a Host pattern that matches it) sets these first: move aivm's block above it, or remove those settings`;
}
