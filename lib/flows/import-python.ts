// `aivm config import-python [PATH]`: a Python aivm store (schema 7) carried into ours. The Python store is only
// read. Its VMs whose libvirt domains exist are adopted as `config discover` does (imported = true: never rebuilt,
// their disk and nvram never removed); records whose names our store already has are kept as they are.
import { join } from "node:path";
import { existsSync, realpathSync } from "node:fs";
import type { StoreDoc } from "../config/model.ts";
import { xdg } from "../config/model.ts";
import { mapPython, type Mapped, readPythonStore } from "../config/python.ts";
import { loadStore, updateStore } from "../config/store.ts";
import { validateDoc } from "../config/validate.ts";
import { resolvePaths } from "../config/resolve.ts";
import { AivmError, ConfigError, EXIT, lastLine, UsageError } from "../errors.ts";
import { virshRead } from "../libvirt/virsh.ts";
import type { Runner } from "../run.ts";

export const pythonDefaultPath = (): string => join(xdg("CONFIG"), "aivm", "config.toml");

export interface ImportResult {
  from: string[];
  mapped: Mapped;
  /** what is added to our store */
  vms: { name: string; adopted: boolean }[];
  networks: string[];
  defaults: boolean;
  /** records (or [defaults]) our store already has: left as they are */
  kept: string[];
  wrote: boolean;
}

const same = (a: string, b: string) => (existsSync(a) && existsSync(b) ? realpathSync(a) === realpathSync(b) : a === b);

/** Our store with the Python records added where it has none of that name. Pure. */
export function mergeImport(ours: StoreDoc, m: Mapped, adopted: Set<string>): { doc: StoreDoc; kept: string[] } {
  const doc = structuredClone(ours);
  const kept: string[] = [];
  const hasDefaults = !!doc.defaults && Object.values(doc.defaults).some((s) => s && Object.keys(s).length);
  if (m.doc.defaults && Object.keys(m.doc.defaults).length) {
    if (hasDefaults) kept.push("[defaults] (yours are kept)");
    else doc.defaults = structuredClone(m.doc.defaults);
  }
  for (const n of m.doc.networks ?? []) {
    if ((doc.networks ?? []).some((x) => x.name === n.name)) kept.push(`network ${n.name} (already in the store)`);
    else (doc.networks ??= []).push(structuredClone(n));
  }
  for (const v of m.doc.vms ?? []) {
    if ((doc.vms ?? []).some((x) => x.name === v.name)) kept.push(`VM ${v.name} (already in the store)`);
    else (doc.vms ??= []).push(structuredClone(withAdopted({ vms: [v] }, adopted).vms![0]!));
  }
  return { doc, kept };
}

/** The plan as lines for stdout: what is written, what changed on the way, what has no equivalent. */
export function formatImport(r: ImportResult, ourPath: string): string {
  const l = [`from ${r.from.join(", ")}`, `into ${ourPath}`];
  if (r.defaults) l.push("  [defaults]: vm, network, firewall, image and ssh identity (where set)");
  for (const n of r.networks) l.push(`  network ${n}`);
  for (const v of r.vms) l.push(`  VM ${v.name}${v.adopted ? ": its libvirt domain is adopted (imported = true: never rebuilt, its disk and nvram never removed)" : ": no libvirt domain of that name; `aivm up` creates it new"}`);
  for (const k of r.kept) l.push(`  not changed: ${k}`);
  if (r.mapped.changes.length) l.push("changed on the way:", ...r.mapped.changes.map((c) => `  ${c}`));
  const pv = r.mapped.provision;
  if (pv.defaults || Object.keys(pv.vms).length) {
    l.push("provision (aivm's provision keys are not in this version: shown, not written):");
    if (pv.defaults) l.push(`  defaults: ${JSON.stringify(pv.defaults)}`);
    for (const [n, p] of Object.entries(pv.vms)) l.push(`  VM ${n}: ${JSON.stringify(p)}`);
  }
  if (r.mapped.unmapped.length) l.push("no equivalent in aivm (not imported):", ...r.mapped.unmapped.map((u) => `  ${u.path} = ${u.value}: ${u.why}`));
  return l.join("\n");
}

export async function importPython(runner: Runner, ourPath: string, pyPath: string | undefined, print: (t: string) => void): Promise<ImportResult> {
  const from = pyPath ?? pythonDefaultPath();
  if (same(from, ourPath)) {
    throw new UsageError("config import-python", `${from} is also aivm's config path; the Python store must stay untouched`, "write aivm's store elsewhere: --config ~/.config/aivm/aivm.toml (or AIVM_CONFIG)");
  }
  const py = readPythonStore(from);
  if (py.raw.schema_version !== 7) {
    const v = py.raw.schema_version;
    throw new ConfigError(`${py.where("schema_version")}: schema_version ${v === undefined ? "is missing" : JSON.stringify(v)}: aivm imports Python aivm stores of schema 7`, "open it once with Python aivm 0.5 (it migrates the store), then import again");
  }
  const m = mapPython(py.raw);
  // every value through our validators, located in the Python store, before anything else is asked
  const own = [...m.problems, ...validateDoc(m.doc as Record<string, unknown>).map((p) => {
    const from = origin(m, p.path) ?? p.path;
    return { path: from, message: p.message.startsWith(p.path) ? from + p.message.slice(p.path.length) : p.message };
  })];
  if (own.length) refuse(own.map((p) => `${py.where(p.path)}: ${p.message}`));
  const ours = loadStore(ourPath);
  const uri = resolvePaths(ours.doc).libvirtUri;
  const list = await virshRead(runner, uri, ["list", "--all", "--name"]);
  if (list.exitCode !== 0) throw new AivmError("config import-python", `virsh list: ${lastLine(list.stderr) || `exit ${list.exitCode}`}`, EXIT.FAILED);
  const domains = new Set(list.stdout.split("\n").map((s) => s.trim()).filter(Boolean));
  const adopted = new Set((m.doc.vms ?? []).map((v) => v.name).filter((n) => domains.has(n)));
  const { doc, kept } = mergeImport(ours.doc, m, adopted);
  // then with what our store already holds (a subnet overlapping one of ours, a bridge taken): located in ours
  const merged = validateDoc(doc as Record<string, unknown>);
  if (merged.length) refuse(merged.map((p) => `${ourPath}: ${p.message}`));
  const added = (k: "vms" | "networks") => (m.doc[k] ?? []).filter((x) => !kept.some((s) => s.startsWith(`${k === "vms" ? "VM" : "network"} ${x.name} `))).map((x) => x.name);
  const result: ImportResult = {
    from: py.files,
    mapped: m,
    vms: added("vms").map((name) => ({ name, adopted: adopted.has(name) })),
    networks: added("networks"),
    defaults: doc.defaults !== ours.doc.defaults && !kept.some((k) => k.startsWith("[defaults]")) && !!m.doc.defaults,
    kept,
    wrote: false,
  };
  print(formatImport(result, ourPath));
  if (!result.vms.length && !result.networks.length && !result.defaults) return result;
  if (!runner.dryRun && !(await runner.confirm("config import-python", `Write these records into ${ourPath}?`))) {
    throw new AivmError("config import-python", "not confirmed; nothing was written", EXIT.FAILED);
  }
  result.wrote = updateStore(ourPath, (d) => mergeImport(d, m, adopted).doc, { dryRun: runner.dryRun, print: (t) => runner.print(t) }).wrote;
  return result;
}

function refuse(lines: string[]): never {
  throw new ConfigError(lines[0]!, `${lines.length > 1 ? `${lines.length - 1} more:\n  ${lines.slice(1).join("\n  ")}\n` : ""}nothing was written`, lines);
}

function withAdopted(doc: StoreDoc, adopted: Set<string>): StoreDoc {
  return { ...doc, vms: (doc.vms ?? []).map((v) => (adopted.has(v.name) ? { ...v, imported: true } : v)) };
}

/** The Python key a problem in our document came from (its nearest mapped ancestor). */
function origin(m: Mapped, path: string): string | undefined {
  for (let p = path; p; p = p.slice(0, Math.max(0, Math.max(p.lastIndexOf("."), p.lastIndexOf("["))))) {
    const o = m.origin.get(p);
    if (o) return o;
  }
  return undefined;
}
