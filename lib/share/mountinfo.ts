// The host's mount table (/proc/self/mountinfo), parsed: what is mounted where, with which options.
import type { Host } from "../host.ts";
import { within } from "./names.ts";

export interface MountEntry { target: string; root: string; options: string; optional: string; fstype: string; source: string }

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** /proc/self/mountinfo by mount point (the last mount on a path wins, as the kernel shows it). */
export function parseMountinfo(text: string): Map<string, MountEntry> {
  const map = new Map<string, MountEntry>();
  for (const line of text.split("\n")) {
    const parts = line.split(" - ");
    if (parts.length < 2) continue;
    const a = parts[0]!.split(" ");
    const b = parts[1]!.split(" ");
    if (a.length < 6) continue;
    map.set(unescapeMount(a[4]!), { target: unescapeMount(a[4]!), root: unescapeMount(a[3]!), options: a[5]!, optional: a.slice(6).join(" "), fstype: b[0] ?? "", source: unescapeMount(b[1] ?? "") });
  }
  return map;
}

export function readMounts(host: Host): Map<string, MountEntry> {
  return parseMountinfo(host.readFile("/proc/self/mountinfo") ?? "");
}

/** Every mount point under dir, dir included (deepest first), from a mount table. */
export function mountsUnder(dir: string, mounts: Map<string, MountEntry>): string[] {
  return [...mounts.keys()].filter((t) => within(t, dir)).sort((a, b) => b.split("/").length - a.split("/").length || b.length - a.length);
}
