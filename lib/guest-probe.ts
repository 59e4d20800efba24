// What aivm asks inside a guest over one ssh session, with shell builtins and cat only (no Python started in the
// guest): cloud-init's own result files, the wait for them, and sections a caller splits the answer into.
export const CLOUD_INIT_RESULT = "/run/cloud-init/result.json";
export const CLOUD_INIT_STATUS = "/run/cloud-init/status.json";
export const BOOT_FINISHED = "/var/lib/cloud/instance/boot-finished";

/** A guest-side line that prints cloud-init's state: `result` and result.json, `running`, `boot-finished` or `not-started`. */
export const CLOUD_INIT_PROBE = `if [ -e ${CLOUD_INIT_RESULT} ]; then echo result; cat ${CLOUD_INIT_RESULT}; echo; elif [ -e ${CLOUD_INIT_STATUS} ]; then echo running; elif [ -e ${BOOT_FINISHED} ]; then echo boot-finished; else echo not-started; fi`;

/** Wait in the guest (a shell loop, up to `seconds`) until cloud-init has finished, then print its state as CLOUD_INIT_PROBE does. */
export function cloudInitWaitScript(seconds: number): string {
  const n = Math.max(1, Math.floor(seconds));
  return `i=0; while [ ! -e ${CLOUD_INIT_RESULT} ] && [ ! -e ${BOOT_FINISHED} ] && [ $i -lt ${n} ]; do sleep 1; i=$((i+1)); done; ${CLOUD_INIT_PROBE}`;
}

export interface CloudInitVerdict { state: "done" | "error" | "running" | "not-started"; errors: string[] }

/** Pure: the cloud-init section of the probe's output. */
export function cloudInitVerdict(section: string): CloudInitVerdict {
  const [first, ...rest] = section.trim().split("\n");
  if (first === "running") return { state: "running", errors: [] };
  if (first === "boot-finished") return { state: "done", errors: [] };
  if (first !== "result") return { state: "not-started", errors: [] };
  try {
    const errors = (JSON.parse(rest.join("\n")) as { v1?: { errors?: unknown[] } }).v1?.errors ?? [];
    return errors.length ? { state: "error", errors: errors.map(String) } : { state: "done", errors: [] };
  } catch {
    return { state: "error", errors: [`${CLOUD_INIT_RESULT} is not JSON`] };
  }
}

/** Pure: split the probe's output into its `@name` sections. */
export function probeSections(stdout: string): Map<string, string> {
  const out = new Map<string, string>();
  let name = "";
  for (const line of stdout.split("\n")) {
    const m = /^@([a-z-]+)$/.exec(line.trim());
    if (m) {
      name = m[1]!;
      out.set(name, "");
    } else if (name) out.set(name, out.get(name) + line + "\n");
  }
  return out;
}
