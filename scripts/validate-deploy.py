"""Cross-checks of the deployment files that no linter makes (run by scripts/validate-deploy.sh).

  validate-deploy.py RENDERED_DIR [STRATA_BIN]

RENDERED_DIR holds each kustomize overlay rendered to <overlay>.yaml. Checks:
- each overlay: the server's `clients` (run.toml) = client replicas × virtual clients per pod;
  every secret and config map a pod mounts is either generated or one the README documents;
  the gpu overlay asks for a GPU, trains on cuda and runs the CUDA image;
- the Grafana dashboard queries only metric names the README documents;
- with STRATA_BIN: every `--flag` that docker-compose.yml, the manifests, the systemd units
  and the Dockerfile pass to `strata SUBCOMMAND` is one that `strata SUBCOMMAND --help` lists.
Prints what it checked; exits 1 with every problem found.
"""

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
problems: list[str] = []


def problem(text: str) -> None:
    problems.append(text)


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def one(objects: list[dict], kind: str, name_prefix: str) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name_prefix)]
    if len(found) != 1:
        raise SystemExit(f"expected one {kind} {name_prefix}*, found {len(found)}")
    return found[0]


def check_overlay(name: str, objects: list[dict]) -> None:
    run = tomllib.loads(one(objects, "ConfigMap", "strata-run")["data"]["run.toml"])
    client_settings = one(objects, "ConfigMap", "strata-client")["data"]
    clients = one(objects, "StatefulSet", "strata-client")
    replicas = clients["spec"]["replicas"]
    virtual = int(client_settings["virtual"])
    if run["clients"] != replicas * virtual:
        problem(f"{name}: run.toml has clients = {run['clients']}, but {replicas} client pods × {virtual} virtual = {replicas * virtual}")
    if run.get("min_clients", run["clients"]) > run["clients"]:
        problem(f"{name}: min_clients is above clients")
    documented = set(re.findall(r"kubectl create secret generic (\S+)", (ROOT / "README.md").read_text()))
    generated = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
    for workload in (o for o in objects if o["kind"] in ("Deployment", "StatefulSet")):
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            if "secret" in volume and volume["secret"]["secretName"] not in documented:
                problem(f"{name}: {workload['metadata']['name']} mounts Secret {volume['secret']['secretName']}, which no `kubectl create secret generic` in the README makes")
            if "configMap" in volume and volume["configMap"]["name"] not in generated:
                problem(f"{name}: {workload['metadata']['name']} mounts ConfigMap {volume['configMap']['name']}, which the overlay does not generate")
    container = clients["spec"]["template"]["spec"]["containers"][0]
    gpu = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
    if name == "gpu":
        if gpu != 1 or client_settings["device"] != "cuda" or not container["image"].endswith(":cuda"):
            problem(f"gpu: clients need nvidia.com/gpu 1 ({gpu}), device cuda ({client_settings['device']}) and a :cuda image ({container['image']})")
    elif gpu or client_settings["device"] != "cpu":
        problem(f"{name}: CPU clients ask for a GPU or a device other than cpu")
    print(f"  {name}: {run['clients']} clients = {replicas} pods × {virtual}; device {client_settings['device']}; secrets documented")


def check_dashboard() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/strata-dashboard.json").read_text())
    readme = (ROOT / "README.md").read_text()
    used = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used |= set(re.findall(r"\bstrata_[a-z_]+", target["expr"]))
    missing = sorted(m for m in used if m not in readme)
    if missing:
        problem(f"the Grafana dashboard queries metrics the README does not name: {', '.join(missing)}")
    print(f"  dashboard: {len(dashboard['panels'])} panels over {len(used)} metrics, all named in the README")


def flag_uses() -> list[tuple[str, str, str]]:
    """(where, subcommand, flag) for every strata invocation in the deployment files."""
    uses = []

    def add(where: str, argv: list[str]) -> None:
        if not argv:
            return
        sub = argv[0]
        for arg in argv[1:]:
            if arg.startswith("--"):
                uses.append((where, sub, arg.split("=", 1)[0]))

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service, spec in compose["services"].items():
        command = spec.get("command")
        if spec.get("entrypoint") is None and isinstance(command, list):
            add(f"docker-compose.yml {service}", command)
        elif isinstance(command, list):
            for line in "\n".join(command).splitlines():
                words = shlex.split(line.strip()) if line.strip().startswith("strata ") else []
                add(f"docker-compose.yml {service}", words[1:])
    for rendered in sorted(Path(sys.argv[1]).glob("*.yaml")):
        for o in docs(rendered):
            if o["kind"] in ("Deployment", "StatefulSet"):
                for c in o["spec"]["template"]["spec"]["containers"]:
                    add(f"k8s {rendered.stem} {o['metadata']['name']}", c.get("args", []))
                    probe = c.get("livenessProbe", {}).get("exec", {}).get("command", [])
                    if probe[:2] == ["strata-entrypoint", "probe"]:
                        uses.append((f"k8s {rendered.stem} liveness", "health", "--http"))
    for unit in sorted((ROOT / "deploy/systemd").glob("*.service")):
        text = re.sub(r"\\\n", " ", unit.read_text())
        for line in text.splitlines():
            if line.startswith("ExecStart="):
                words = shlex.split(line.split("=", 1)[1])
                words = words[1:] if words[0].endswith("strata-entrypoint") or words[0].endswith("/strata") else words
                add(f"{unit.name}", words)
    dockerfile = (ROOT / "deploy/docker/Dockerfile").read_text()
    for match in re.finditer(r'CMD \["strata", ([^\]]*)\]', dockerfile):
        add("Dockerfile HEALTHCHECK", json.loads(f"[{match.group(1)}]"))
    entrypoint = (ROOT / "deploy/strata-entrypoint.sh").read_text()
    for sub, flag in re.findall(r'"\$bin" (server|client|health) (--[a-z-]+)', entrypoint):
        uses.append(("strata-entrypoint", sub, flag))
    return uses


def check_flags(binary: str) -> None:
    helps: dict[str, set[str]] = {}
    uses = flag_uses()
    for where, sub, flag in uses:
        if sub not in helps:
            result = subprocess.run([binary, sub, "--help"], capture_output=True, text=True)
            helps[sub] = set(re.findall(r"--[a-z][a-z0-9-]*", result.stdout)) if result.returncode == 0 else set()
            if result.returncode != 0:
                problem(f"`strata {sub} --help` failed: {result.stderr.strip()[:200]}")
                continue
        if helps[sub] and flag not in helps[sub]:
            problem(f"{where}: `strata {sub} {flag}`: `strata {sub} --help` lists no {flag}")
    print(f"  flags: {len(uses)} uses in {len(helps)} subcommands checked against {binary}")


def main() -> None:
    rendered = Path(sys.argv[1])
    for path in sorted(rendered.glob("*.yaml")):
        if path.stem != "base":
            check_overlay(path.stem, docs(path))
    check_dashboard()
    if len(sys.argv) > 2 and sys.argv[2]:
        check_flags(sys.argv[2])
    else:
        print("  flags: not checked (no STRATA_BIN)")
    if problems:
        for p in problems:
            print(f"validate-deploy: {p}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
