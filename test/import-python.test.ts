// `aivm config import-python`: Python aivm stores of schema 7 (test/fixtures/python-aivm/: a realistic monolith, a
// split layout, malformed ones) carried into ours through our validators; domains adopted as discover does; the
// Python store never changed; what has no equivalent listed.
import { afterEach, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runMain } from "./helpers/main.ts";
import { FakeBackend } from "./helpers/fake-runner.ts";
import { V } from "./helpers/fixtures.ts";
import { aivm, isolatedEnv, ROOT } from "./helpers/cli.ts";
import { inject } from "../lib/cli/_shared.ts";
import { Runner } from "../lib/run.ts";
import { loadStore } from "../lib/config/store.ts";
import { resolveVm } from "../lib/config/resolve.ts";
import { defaultBridge, UBUNTU_2404 } from "../lib/config/model.ts";
import { mapPython, readPythonStore } from "../lib/config/python.ts";
import { EXIT } from "../lib/errors.ts";

const FIX = join(ROOT, "test/fixtures/python-aivm");

/** The fixtures copied to a temp dir (with each file's bytes and mtime), and a path for our store beside them. */
function setup(): { py: string; ours: string; snapshot: () => Map<string, string> } {
  const dir = mkdtempSync(join(tmpdir(), "aivm-py-"));
  cpSync(FIX, join(dir, "py"), { recursive: true });
  const snapshot = () => {
    const m = new Map<string, string>();
    const walk = (d: string) => { for (const n of readdirSync(d)) { const p = join(d, n); if (statSync(p).isDirectory()) walk(p); else m.set(p, readFileSync(p, "utf8") + statSync(p).mtimeMs); } };
    walk(join(dir, "py"));
    return m;
  };
  return { py: join(dir, "py"), ours: join(dir, "aivm.toml"), snapshot };
}

function withDomains(names: string[], o: { yes?: boolean } = {}): FakeBackend {
  const fake = new FakeBackend();
  fake.on([...V, "list", "--all", "--name"], { stdout: names.join("\n") + "\n" });
  inject.runner = ({ dryRun, yes }) => new Runner(fake, { isRoot: true, interactive: false, dryRun, yes: yes || !!o.yes });
  return fake;
}

afterEach(() => { delete inject.runner; });

describe("a realistic monolithic store (full.toml)", () => {
  test("defaults, networks, VMs, attachments of every mode, firewall keys and the ssh identity land in ours", async () => {
    const { py, ours, snapshot } = setup();
    const before = snapshot();
    withDomains(["aivm-2404-devbox", "unrelated"]);
    const r = await runMain(["config", "import-python", join(py, "full.toml"), "--yes", "--config", ours]);
    expect(r.stderr).toContain("imported 2 VM(s), 2 network(s) and [defaults]");
    expect(r.code).toBe(0);
    expect(snapshot()).toEqual(before); // the Python store is untouched
    const doc = loadStore(ours).doc;
    expect(doc.defaults).toEqual({
      vm: { name: "aivm-2404-devbox", user: "agent", cpus: 4, memory_mib: 8192, disk_gib: 40 },
      network: { name: "aivm-net", subnet: "10.77.0.0/24", gateway: "10.77.0.1", dhcp_start: "10.77.0.100", dhcp_end: "10.77.0.200" },
      firewall: { enabled: true, block_cidrs: ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4"], extra_block_cidrs: [], allow_tcp_ports: [], allow_udp_ports: [] },
      image: UBUNTU_2404,
      paths: { ssh_identity: "/home/dev/.ssh/id_aivm_ed25519" },
    });
    expect(doc.networks).toEqual([
      { name: "aivm-net", subnet: "10.77.0.0/24", gateway: "10.77.0.1", dhcp_start: "10.77.0.100", dhcp_end: "10.77.0.200", firewall: { enabled: true, block_cidrs: ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4"], extra_block_cidrs: ["203.0.113.0/24"], allow_tcp_ports: [8080, 3000], allow_udp_ports: [] } },
      { name: "lab-net", bridge: "virbr-lab", subnet: "10.78.0.0/24", gateway: "10.78.0.1", dhcp_start: "10.78.0.100", dhcp_end: "10.78.0.200", firewall: { enabled: false, block_cidrs: [], extra_block_cidrs: [], allow_tcp_ports: [], allow_udp_ports: [53] } },
    ]);
    expect(doc.vms).toEqual([
      {
        name: "aivm-2404-devbox", network: "aivm-net", user: "agent", cpus: 4, memory_mib: 8192, disk_gib: 40, imported: true, image: UBUNTU_2404,
        attachments: [
          { host_path: "/home/dev/code/app", mode: "shared-root", access: "rw", guest_dst: "/home/dev/code/app" },
          { host_path: "/home/dev/datasets", mode: "shared", access: "ro", guest_dst: "/data" },
          { host_path: "/home/dev/notes", mode: "shared-root", access: "rw" },
        ],
      },
      {
        name: "scratch", network: "lab-net", user: "dev", cpus: 2, memory_mib: 2048, disk_gib: 16,
        image: { url: "file:///var/cache/aivm/noble-base.img", sha256: UBUNTU_2404.sha256 },
        attachments: [{ host_path: "/home/dev/code/lib", mode: "git", access: "rw", guest_dst: "/home/dev/code/lib" }],
      },
    ]);
    // the adopted VM resolves onto the per-network bridge aivm derives, and the plan said so
    const vm = resolveVm(doc, "aivm-2404-devbox");
    expect(vm.network.bridge).toBe(defaultBridge("aivm-net"));
    expect(vm.imported).toBe(true);
    expect(resolveVm(doc, "scratch").imported).toBeUndefined();
    expect(r.stdout).toContain(`network aivm-net: bridge virbr-aivm -> ${defaultBridge("aivm-net")}`);
    expect(r.stdout).toContain("attachment /home/dev/code/app: mode persistent -> shared-root");
    expect(r.stdout).toContain("VM aivm-2404-devbox: its libvirt domain is adopted (imported = true: never rebuilt, its disk and nvram never removed)");
    expect(r.stdout).toContain("VM scratch: no libvirt domain of that name; `aivm up` creates it new");
  });

  test("what has no equivalent is listed (password masked), provision is mapped into its own object", () => {
    const py = readPythonStore(join(FIX, "full.toml"));
    const m = mapPython(py.raw);
    const listed = m.unmapped.map((u) => `${u.path} = ${u.value}`);
    for (const want of [
      "active_vm = \"aivm-2404-devbox\"", "behavior.yes_sudo = false", "behavior.privilege_mode = \"as-needed\"", "defaults.verbosity = 2",
      "defaults.vm.allow_password_login = true", "defaults.vm.password = (set)", "vms[0].vm.password = (set)", "vms[0].vm.timezone = \"Europe/Berlin\"",
      "defaults.virtiofs.fd_guard = true", "defaults.virtiofs.fd_guard_threshold = 500000", "vms[0].virtiofs.fd_guard_interval_sec = 600",
      "defaults.firewall.table = \"aivm_sandbox\"", "defaults.image.cache_name = \"noble-base.img\"", "defaults.paths.base_dir = \"/var/lib/libvirt/aivm\"",
      "attachments[0].tag = \"hostcode-app-1a2b3c4d\"", "attachments[0].host_lexical_paths = [\"/home/dev/app-link\"]", "attachments[4] = \"/home/dev/orphan\"",
    ]) expect(listed).toContain(want);
    expect(listed.join("\n")).not.toContain("hunter2");
    expect(m.provision).toEqual({
      defaults: { enabled: true, docker: true, packages: ["git", "jq", "ripgrep", "fd-find", "tmux", "htop", "unzip", "ca-certificates", "curl"] },
      vms: { "aivm-2404-devbox": { enabled: true, docker: false, packages: ["git", "jq"] } },
    });
  });

  test("--dry-run prints the plan and the file, writes nothing; without --yes and without a terminal: exit 2", async () => {
    const { py, ours } = setup();
    withDomains([]);
    const d = await runMain(["config", "import-python", join(py, "full.toml"), "--dry-run", "--config", ours]);
    expect(d.code).toBe(0);
    expect(d.stdout).toContain(`cat > ${ours} <<'AIVM_EOF'`);
    expect(existsSync(ours)).toBe(false);
    const n = await runMain(["config", "import-python", join(py, "full.toml"), "--config", ours]);
    expect(n.code).toBe(EXIT.USAGE);
    expect(n.stderr).toContain("--yes");
    expect(existsSync(ours)).toBe(false);
  });

  test("records our store already has are kept (and said so); the rest is added, its comments kept", async () => {
    const { py, ours } = setup();
    writeFileSync(ours, '# mine\n[defaults.vm]\ncpus = 1  # small\n\n[[networks]]\nname = "lab-net"\nsubnet = "10.99.0.0/24"\n');
    withDomains([], { yes: true });
    const r = await runMain(["config", "import-python", join(py, "full.toml"), "--yes", "--config", ours]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("not changed: [defaults] (yours are kept)");
    expect(r.stdout).toContain("not changed: network lab-net (already in the store)");
    const text = readFileSync(ours, "utf8");
    expect(text.startsWith('# mine\n[defaults.vm]\ncpus = 1  # small\n\n[[networks]]\nname = "lab-net"\nsubnet = "10.99.0.0/24"\n')).toBe(true);
    expect(loadStore(ours).doc.vms!.map((v) => v.name)).toEqual(["aivm-2404-devbox", "scratch"]);
  });

  test("the Python store at aivm's own config path is refused (exit 2): it must stay untouched", async () => {
    const { py } = setup();
    withDomains([]);
    const r = await runMain(["config", "import-python", join(py, "full.toml"), "--yes", "--config", join(py, "full.toml")]);
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.stderr).toContain("is also aivm's config path");
  });
});

describe("the split layout (config.toml + defaults.toml + networks.toml + vms/*.toml)", () => {
  test("every fragment is read; nested attachments keep their VM; unset keys get aivm's defaults", async () => {
    const { py, ours, snapshot } = setup();
    const before = snapshot();
    withDomains(["web", "worker"]);
    const r = await runMain(["config", "import-python", join(py, "split/config.toml"), "--yes", "--config", ours]);
    expect(r.code).toBe(0);
    expect(snapshot()).toEqual(before);
    expect(r.stdout.split("\n")[0]).toBe(`from ${["config.toml", "defaults.toml", "networks.toml", "vms/web.toml", "vms/worker.toml"].map((f) => join(py, "split", f)).join(", ")}`);
    const doc = loadStore(ours).doc;
    expect(doc.vms).toEqual([
      { name: "web", network: "aivm-net", cpus: 4, memory_mib: 6144, disk_gib: 32, imported: true, attachments: [
        { host_path: "/srv/web", mode: "shared-root", access: "rw", guest_dst: "/srv/web" },
        { host_path: "/srv/assets", mode: "shared", access: "ro" },
      ] },
      { name: "worker", network: "aivm-net", cpus: 1, memory_mib: 1024, disk_gib: 10, imported: true },
    ]);
    expect(doc.networks).toEqual([{ name: "aivm-net", subnet: "10.88.0.0/24", gateway: "10.88.0.1", dhcp_start: "10.88.0.100", dhcp_end: "10.88.0.200", firewall: { enabled: true, allow_tcp_ports: [5432] } }]);
    expect(doc.defaults?.paths).toEqual({ ssh_identity: "/home/dev/.ssh/id_ed25519" });
    expect(resolveVm(doc, "web").attachments[1]).toEqual({ host_path: "/srv/assets", mode: "shared", access: "ro", guest_dst: "/srv/assets" });
    expect(r.stdout).toContain("VM worker: {\"enabled\":false}");
  });
});

describe("malformed Python stores: exit 78, file:line:col in the Python store, nothing written (real CLI)", () => {
  const env = () => ({ ...isolatedEnv(), PATH: "/nonexistent" }); // no virsh: each must fail before libvirt is asked
  const cases: [string, (py: string) => string][] = [
    ["syntax error", (py) => `${join(py, "malformed/syntax.toml")}:5:`],
    ["a syntax error in a split fragment is located in that fragment", (py) => `${join(py, "malformed/split-bad/vms/a.toml")}:5:`],
    ["schema 6", (py) => `${join(py, "malformed/schema6.toml")}:1:1: schema_version 6: aivm imports Python aivm stores of schema 7`],
    ["bad values go through our validators, located at the Python key", (py) => `${join(py, "malformed/bad-values.toml")}:4:1: defaults.vm.cpus: must be an integer from 1 to 256`],
    ["a VM naming a missing network", (py) => `${join(py, "malformed/missing-network.toml")}:5:1: vms[0].network_name: network no-such-net is neither`],
  ];
  const file: Record<string, string> = { "syntax error": "malformed/syntax.toml", "schema 6": "malformed/schema6.toml", "a syntax error in a split fragment is located in that fragment": "malformed/split-bad/config.toml", "bad values go through our validators, located at the Python key": "malformed/bad-values.toml", "a VM naming a missing network": "malformed/missing-network.toml" };
  for (const [what, want] of cases) {
    test(what, async () => {
      const { py, ours, snapshot } = setup();
      const before = snapshot();
      const r = await aivm(["config", "import-python", join(py, file[what]!), "--yes", "--config", ours], { env: env() });
      expect(r.exitCode).toBe(EXIT.CONFIG);
      expect(r.stderr.split("\n")[0]).toStartWith(`aivm: config: ${want(py)}`);
      expect(existsSync(ours)).toBe(false);
      expect(snapshot()).toEqual(before);
    }, 20_000);
  }

  test("every bad value is listed, each at its own line", () => {
    const py = readPythonStore(join(FIX, "malformed/bad-values.toml"));
    expect(py.where("defaults.vm.ram_mb")).toBe(`${join(FIX, "malformed/bad-values.toml")}:5:1`);
    expect(py.where("attachments[0].mode")).toBe(`${join(FIX, "malformed/bad-values.toml")}:20:1`);
  });

  test("a missing Python store: exit 78 naming it", async () => {
    const { ours } = setup();
    const r = await aivm(["config", "import-python", "/nonexistent/config.toml", "--config", ours]);
    expect(r.exitCode).toBe(EXIT.CONFIG);
    expect(r.stderr.split("\n")[0]).toBe("aivm: config: /nonexistent/config.toml: no such file");
  });
});

describe("completion of config import-python (asking each shell)", () => {
  async function script(shell: string, env: Record<string, string>): Promise<string> {
    const r = await aivm(["completion", shell], { env });
    expect(r.exitCode).toBe(0);
    return r.stdout;
  }

  test("bash: the command, its flags, and file names for PATH", async () => {
    const env = isolatedEnv();
    const file = join(env.HOME!, "aivm.bash");
    writeFileSync(file, await script("bash", env));
    writeFileSync(join(env.HOME!, "pyconfig.toml"), "");
    const complete = (words: string[]) => {
      const arr = words.map((w) => `'${w}'`).join(" ");
      const p = Bun.spawnSync(["bash", "-c", `cd '${env.HOME}'; source '${file}'; COMP_WORDS=(aivm ${arr}); COMP_CWORD=${words.length}; _aivm; printf '%s\\n' "\${COMPREPLY[@]}"`], { env });
      return new TextDecoder().decode(p.stdout).trim().split("\n").filter(Boolean).sort();
    };
    expect(complete(["config", "im"])).toEqual(["import-python"]);
    expect(complete(["config", "import-python", "--d"])).toEqual(["--dry-run"]);
    expect(complete(["config", "import-python", "pyc"])).toEqual(["pyconfig.toml"]);
  }, 20_000);

  test.skipIf(!Bun.which("fish"))("fish: `complete -C` offers the command and its flags", async () => {
    const env = isolatedEnv();
    const file = join(env.HOME!, "aivm.fish");
    writeFileSync(file, await script("fish", env));
    const p = Bun.spawnSync(["fish", "--no-config", "-c", `source '${file}'; complete -C 'aivm config im'; complete -C 'aivm config import-python --y'`], { env });
    expect(new TextDecoder().decode(p.stderr)).toBe("");
    const out = new TextDecoder().decode(p.stdout);
    expect(out).toContain("import-python");
    expect(out).toContain("--yes");
  }, 20_000);
});
