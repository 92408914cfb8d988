"""Cross-checks of the deployment files that no linter makes (run by scripts/validate-deploy.sh).

  validate-deploy.py RENDERED_DIR [STRATA_BIN]

RENDERED_DIR holds each kustomize overlay rendered to <overlay>.yaml. Checks:
- each overlay: the server's `clients` (run.toml) = client replicas × virtual clients per pod;
  every secret and config map a pod mounts is either generated or one the README documents;
  the gpu overlay asks for a GPU, trains on cuda and runs the CUDA image;
- the Grafana dashboard queries only metric names the README documents;
- the images (deploy/docker/Dockerfile, docker-bake.json): both variants for linux/amd64 and
  linux/arm64, every build argument one the Dockerfile declares, every base image one known to
  be published for each platform (a table kept here: there is no registry to ask), the cargo
  target cache kept per architecture and variant, and no architecture named outside comments;
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


# The platforms every image is built for, and the base images' platforms as their publishers
# list them (Docker Hub: rust and debian are official multi-architecture images; nvidia/cuda
# publishes linux/amd64 and linux/arm64, the latter for arm64 servers, SBSA). A new base image
# or tag must be added here after checking its manifest list, e.g.
# `docker buildx imagetools inspect IMAGE`.
PLATFORMS = {"linux/amd64", "linux/arm64"}
BASE_PLATFORMS = {
    "rust:1.95-bookworm": {"linux/amd64", "linux/arm64"},
    "debian:bookworm-slim": {"linux/amd64", "linux/arm64"},
    "nvidia/cuda:13.0.0-base-ubuntu24.04": {"linux/amd64", "linux/arm64"},
}


def check_images() -> None:
    dockerfile = (ROOT / "deploy/docker/Dockerfile").read_text()
    # Instructions as one line each: continuations joined, comments dropped.
    code = re.sub(r"\\\n", " ", "\n".join(l for l in dockerfile.splitlines() if not l.lstrip().startswith("#")))
    declared = set(re.findall(r"^ARG (\w+)", code, re.M))
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)", code, re.M))
    bake = json.loads((ROOT / "deploy/docker/docker-bake.json").read_text())
    targets = bake["target"]
    if set(targets) != {"cpu", "cuda"} or set(bake["group"]["default"]["targets"]) != set(targets):
        problem(f"docker-bake.json: targets {sorted(targets)}, expected cpu and cuda, both in the default group")
    bases = set()
    for name, target in targets.items():
        args = target.get("args", {})
        if not (ROOT / target.get("dockerfile", "")).is_file() or target.get("context") != ".":
            problem(f"docker-bake.json {name}: dockerfile {target.get('dockerfile')} from context {target.get('context')}: not the repository's Dockerfile")
        if set(target.get("platforms", [])) != PLATFORMS:
            problem(f"docker-bake.json {name}: platforms {target.get('platforms')}, expected {sorted(PLATFORMS)}")
        if args.get("VARIANT") != name:
            problem(f"docker-bake.json {name}: VARIANT is {args.get('VARIANT')}")
        for arg in sorted(set(args) - declared):
            problem(f"docker-bake.json {name}: build argument {arg} is not an ARG of the Dockerfile")
        for stage_arg in ("BUILDER_BASE", "RUNTIME_BASE"):
            base = args.get(stage_arg, defaults.get(stage_arg))
            bases.add(base)
            missing = sorted(set(target.get("platforms", [])) - BASE_PLATFORMS.get(base, set()))
            if missing:
                problem(f"docker-bake.json {name}: {stage_arg} {base} is not known to be published for {', '.join(missing)}")
    cuda_base = targets.get("cuda", {}).get("args", {}).get("RUNTIME_BASE")
    if cuda_base and f"RUNTIME_BASE={cuda_base}" not in dockerfile:
        problem(f"the Dockerfile's own build command names another CUDA runtime base than docker-bake.json ({cuda_base})")
    builder = code.split(" AS builder", 1)[-1].split("\nFROM ", 1)[0]
    if not re.search(r"^ARG TARGETARCH\b", builder, re.M):
        problem("Dockerfile: the builder stage declares no ARG TARGETARCH")
    mount = re.search(r"--mount=type=cache,[^ ]*target=/src/target\b[^ ]*", code)
    if not mount or "${TARGETARCH}" not in mount.group(0) or "${VARIANT}" not in mount.group(0):
        problem("Dockerfile: the cargo target cache is not kept per ${TARGETARCH} and ${VARIANT}: a multi-platform build would share it")
    for platform in sorted(PLATFORMS):
        arch = platform.split("/")[1]
        if not re.search(rf"\b{arch}\) machine=", builder):
            problem(f"Dockerfile: the builder's architecture check has no case for {arch}")
    named = sorted(set(re.findall(r"x86_64|aarch64", code)))
    if named:
        problem(f"Dockerfile: names {', '.join(named)} outside comments: pip must pick the platform's wheel itself")
    print(f"  images: {', '.join(sorted(targets))} × {', '.join(sorted(PLATFORMS))}; bases {', '.join(sorted(b for b in bases if b))} published for both; target cache per architecture and variant")


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
    check_images()
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
