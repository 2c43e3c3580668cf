"""The deployment files of ``deploy/``: systemd units, the Dockerfile, docker compose and
the Kubernetes manifests.

Neither Docker nor a cluster runs here, so these tests check what can be checked without
them, against the code and the other files they rely on: every ``callboard`` command
line parses with the real CLI parser, every config file they run exists and loads, every
file they mount or copy exists, and the ports agree everywhere (the daemons' and the
monitor's ``--metrics``, the probes, the Services, the Prometheus targets, the NATS
cluster's client port). ``systemd-analyze verify``, ``promtool`` and ``kubectl
kustomize`` check the files too where they are installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import ipaddress
import json
import re
import shlex
import shutil
import sys
import tarfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import yaml
from prometheus_support import require_tool, run_tool

from actors._config import DaemonConfig, build_agents, load_config
from bus import ConnectOptions, env_fields, parse_metrics_address
from orchestrator.cli import EXIT_USAGE, build_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
UNITS = sorted(SYSTEMD.glob("*.service"))
ENV_FILE = SYSTEMD / "callboard.env"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"
COMPOSE = DEPLOY / "docker-compose.yml"
COMPOSE_PROMETHEUS = DEPLOY / "docker" / "prometheus.yml"
COMPOSE_DATASOURCES = DEPLOY / "docker" / "grafana" / "datasources" / "prometheus.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
GRAFANA_DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
GRAFANA_DASHBOARDS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "callboard.yml"
KUBERNETES = DEPLOY / "kubernetes"
KUSTOMIZATION = KUBERNETES / "kustomization.yaml"
PYPROJECT = ROOT / "pyproject.toml"

DAEMON_JOB, MONITOR_JOB, NATS_JOB = "callboard-daemon", "callboard-monitor", "nats"
NATS_CLIENT_PORT = 4222
DRAIN_TIMEOUT = ConnectOptions().drain_timeout
"""Seconds a stopping daemon may spend draining its connection after the grace period."""


def rel(path: Path | PurePosixPath) -> str:
    return str(Path(path).relative_to(ROOT)) if Path(path).is_absolute() else str(path)


# --- the callboard command lines of every file -----------------------------------------------


@dataclass(frozen=True)
class CommandLine:
    """One ``callboard`` invocation in a deployment file.

    Attributes:
        where: the file and the place in it, for assertion messages.
        argv: the arguments after ``callboard``.
        config: the host file of the TOML config it runs, if any.
    """

    where: str
    argv: tuple[str, ...]
    config: Path | None = None

    @property
    def command(self) -> str:
        return f"callboard {shlex.join(self.argv)}"


def parse_cli(line: CommandLine) -> Any:
    """The namespace the real parser makes of ``line``; fails with argparse's message."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return build_parser().parse_args(list(line.argv))
    except SystemExit:
        pytest.fail(f"{line.where}: `{line.command}` does not parse:\n{stderr.getvalue()}")


def metrics_address(line: CommandLine) -> tuple[str, int] | None:
    """(host, port) of the ``--metrics`` of a command line, or None without one."""
    address = getattr(parse_cli(line), "metrics", None)
    return None if address is None else parse_metrics_address(address)


# --- systemd -----------------------------------------------------------------------------------


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as section → key → values (a key may repeat, as SystemCallFilter=)."""
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{rel(path)}:{number}: no continuation lines, please"
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
            continue
        assert section is not None and "=" in line, f"{rel(path)}:{number}: not KEY=VALUE: {raw}"
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def service_value(path: Path, key: str) -> str:
    values = read_unit(path)["Service"].get(key)
    assert values, f"{rel(path)}: [Service] has no {key}="
    return values[-1]


def unit_command_line(path: Path) -> CommandLine:
    argv = shlex.split(service_value(path, "ExecStart"))
    assert argv[0] == "/usr/local/bin/callboard", f"{rel(path)}: ExecStart runs {argv[0]}"
    line = CommandLine(f"{rel(path)} ExecStart", tuple(argv[1:]))
    if line.argv[0] != "run":
        return line
    # /etc/callboard/agents.toml is deploy/agents.toml, installed as the unit says
    config = DEPLOY / PurePosixPath(parse_cli(line).config).name
    return CommandLine(line.where, line.argv, config)


def unit_by_command(command: str) -> Path:
    [unit] = [u for u in UNITS if unit_command_line(u).argv[0] == command]
    return unit


def test_there_is_a_daemon_and_a_monitor_unit() -> None:
    assert {unit_command_line(unit).argv[0] for unit in UNITS} == {"run", "monitor"}, UNITS


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    # the units run /usr/local/bin/callboard, which verify insists exists: point them at
    # the callboard of this environment
    callboard = Path(sys.executable).parent / "callboard"
    assert callboard.is_file(), f"no callboard console script next to {sys.executable}"
    copies = []
    for unit in UNITS:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/usr/local/bin/callboard", str(callboard)))
        copies.append(str(copy))
    result = run_tool([analyze, "verify", "--man=no", *copies], cwd=tmp_path)
    output = f"{result.stdout}{result.stderr}".strip()
    assert result.returncode == 0 and not output, f"systemd-analyze verify:\n{output}"


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
}


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_a_unit_runs_callboard_unprivileged_and_hardened(unit: Path) -> None:
    service = read_unit(unit)["Service"]
    where = rel(unit)
    assert service_value(unit, "Type") == "simple", f"{where}: callboard does not sd_notify"
    assert service_value(unit, "KillSignal") == "SIGTERM", where
    assert service_value(unit, "Restart") == "on-failure", where
    assert service_value(unit, "RestartSec"), where
    # a usage or config error exits with the CLI's usage code: restarting cannot fix it
    assert service_value(unit, "RestartPreventExitStatus") == str(EXIT_USAGE), where
    assert service.get("User") or service.get("DynamicUser") == ["yes"], f"{where}: runs as root"
    # the shared settings, then the unit's own NATS login (one NATS user per role)
    assert service.get("EnvironmentFile") == [
        "-/etc/callboard/callboard.env",
        "-/etc/callboard/%N.env",
    ], where
    for key, value in HARDENING.items():
        assert service.get(key) == [value], f"{where}: wants {key}={value}"
    families = set(service_value(unit, "RestrictAddressFamilies").split())
    assert families == {"AF_INET", "AF_INET6", "AF_UNIX"}, f"{where}: {families}"
    assert read_unit(unit)["Install"]["WantedBy"] == ["multi-user.target"], where


def test_the_daemon_unit_reloads_with_sighup_and_outwaits_the_grace_period() -> None:
    unit = unit_by_command("run")
    assert service_value(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
    # the unit's comment tells how to run any of the shipped configs with it: SIGKILL must
    # come after the longest grace period and the connection's drain
    stop = float(service_value(unit, "TimeoutStopSec"))
    for config in (DEPLOY / "agents.toml", DEPLOY / "llm-agents.toml"):
        needed = load_config(config).grace_period + DRAIN_TIMEOUT
        assert stop > needed, f"{rel(unit)}: TimeoutStopSec={stop:g} <= {needed:g} for {config}"


@pytest.mark.parametrize(
    ("command", "job"), [("run", DAEMON_JOB), ("monitor", MONITOR_JOB)], ids=["daemon", "monitor"]
)
def test_a_unit_serves_metrics_where_the_prometheus_config_scrapes(command: str, job: str) -> None:
    line = unit_command_line(unit_by_command(command))
    address = metrics_address(line)
    assert address is not None, f"{line.where}: `{line.command}` serves no metrics"
    host, port = address
    assert ipaddress.ip_address(host).is_loopback, f"{line.where}: metrics on {host}, not loopback"
    targets = prometheus_targets(read_yaml(PROMETHEUS))[job]
    assert f"{host}:{port}" in targets, f"{line.where}: {host}:{port} not in {rel(PROMETHEUS)}"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines, the commented-out examples (``#KEY=value``) included."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"#?([A-Z][A-Z0-9_]*)=(\S*)", line.strip())
        if match:
            found.setdefault(match[1], match[2])
    return found


def test_the_env_file_sets_only_variables_callboard_reads() -> None:
    variables = read_env_file(ENV_FILE)
    assert {"NATS_URL", "NATS_CREDS"} <= set(variables), rel(ENV_FILE)
    sources = "\n".join(
        path.read_text(encoding="utf-8")
        for package in ("bus", "actors", "orchestrator")
        for path in (ROOT / package).rglob("*.py")
    )
    for name, value in variables.items():
        if name.startswith("NATS_"):
            assert env_fields({name: value}), f"{rel(ENV_FILE)}: callboard does not read {name}"
        else:
            assert f'"{name}"' in sources, f"{rel(ENV_FILE)}: no code reads {name}"


# --- Dockerfile --------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, arguments = (pending + line).partition(" ")
        instructions.append((word.upper(), arguments.strip()))
        pending = ""
    return instructions


def dockerfile_values(instruction: str) -> list[str]:
    return [args for word, args in dockerfile_instructions() if word == instruction]


def exec_form(instruction: str) -> list[str]:
    [arguments] = dockerfile_values(instruction)
    value = json.loads(arguments)
    assert isinstance(value, list), f"{rel(DOCKERFILE)}: {instruction} is not in exec form"
    return value


def dockerfile_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context (not ``--from``)."""
    copies = []
    for arguments in dockerfile_values("COPY"):
        words = shlex.split(arguments)
        if any(word.startswith("--from") for word in words):
            continue
        words = [word for word in words if not word.startswith("--")]
        copies.append((words[:-1], words[-1]))
    return copies


def dockerignore_excludes(path: str) -> bool:
    """Whether Dockerfile.dockerignore keeps ``path`` out of the build context.

    Docker's rules: the last pattern that matches the path or one of its parents wins;
    ``!`` re-includes; ``*`` stays within one path component, ``**`` crosses them.
    """
    excluded = False
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = "".join(
            ".*"
            if token == "**"
            else "[^/]*"
            if token == "*"
            else "[^/]"
            if token == "?"
            else re.escape(token)
            for token in re.split(r"(\*\*|\*|\?)", pattern)
            if token
        )
        regex = regex.replace(".*/", "(.*/)?")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def test_the_dockerfile_copies_files_that_exist_and_the_context_keeps() -> None:
    copies = dockerfile_copies()
    assert copies, f"{rel(DOCKERFILE)} copies nothing"
    for sources, _ in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"{rel(DOCKERFILE)}: COPY {source}: no such file"
            assert not dockerignore_excludes(source.rstrip("/")), (
                f"{rel(DOCKERIGNORE)} leaves {source} out of the build context"
            )
    assert dockerignore_excludes("tests/unit/test_codec.py"), "the context should skip tests"
    assert dockerignore_excludes("bus/__pycache__/x.pyc")


def test_the_dockerfile_runs_the_console_script_as_a_numeric_non_root_user() -> None:
    scripts = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["scripts"]
    assert exec_form("ENTRYPOINT") == ["callboard"], "the entry point is the console script"
    assert scripts.get("callboard") == "orchestrator.cli:main", f"{rel(PYPROJECT)}: {scripts}"
    uid = dockerfile_values("USER")[-1].partition(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {uid}: Kubernetes' runAsNonRoot needs a number"
    assert f"--uid {uid}" in " ".join(dockerfile_values("RUN")), "USER is not the user it creates"
    line = CommandLine(f"{rel(DOCKERFILE)} CMD", tuple(exec_form("CMD")))
    namespace = parse_cli(line)
    copied = {
        str(PurePosixPath(destination) / PurePosixPath(source).name): ROOT / source
        for sources, destination in dockerfile_copies()
        for source in sources
    }
    assert namespace.config in copied, f"{line.where}: {namespace.config} is not in the image"
    load_config(copied[namespace.config])


def test_the_image_exposes_every_metrics_port_its_containers_serve() -> None:
    exposed = {int(port) for ports in dockerfile_values("EXPOSE") for port in ports.split()}
    lines = [
        CommandLine(f"{rel(DOCKERFILE)} CMD", tuple(exec_form("CMD"))),
        *compose_command_lines(),
        *kubernetes_command_lines(),
    ]
    served = {address[1]: line.where for line in lines if (address := metrics_address(line))}
    assert set(served) <= exposed, f"EXPOSE {sorted(exposed)}; served: {served}"


def test_the_dockerfiles_build_context_is_enough_to_build_the_package(tmp_path: Path) -> None:
    """What ``pip install '.[llm]'`` in the image sees builds, with the console script."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed in this environment")
    context = tmp_path / "context"
    for sources, destination in dockerfile_copies():
        if destination.startswith("/"):
            continue  # copied into the runtime image, not the build
        for source in sources:
            target = context / source
            if (ROOT / source).is_dir():
                shutil.copytree(
                    ROOT / source,
                    target,
                    ignore=lambda folder, names: [
                        n for n in names if dockerignore_excludes(rel(Path(folder) / n))
                    ],
                )
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, target)
    dist = tmp_path / "dist"
    build = "import setuptools.build_meta as b, sys; print(b.build_sdist(sys.argv[1]))"
    result = run_tool([sys.executable, "-c", build, str(dist)], cwd=context)
    assert result.returncode == 0, f"the build context does not build:\n{result.stderr}"
    # a missing file the metadata names (readme = "README.md") is only a warning
    missing = [line for line in result.stderr.splitlines() if "cannot be found" in line]
    assert not missing, f"the build context lacks files pyproject.toml names: {missing}"
    [sdist] = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
        [entry_points] = [n for n in names if n.endswith(".egg-info/entry_points.txt")]
        extracted = archive.extractfile(entry_points)
        assert extracted is not None
        scripts = extracted.read().decode()
    assert re.search(r"^callboard = orchestrator\.cli:main$", scripts, re.M), scripts
    for package in ("bus", "actors", "orchestrator"):
        assert any(n.endswith(f"/{package}/__init__.py") for n in names), f"no {package}"


# --- docker compose ----------------------------------------------------------------------------


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose() -> dict[str, Any]:
    document = read_yaml(COMPOSE)
    assert isinstance(document, dict) and document.get("services"), f"{rel(COMPOSE)}: no services"
    return document


def compose_services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def as_list(value: Any) -> list[str]:
    """A compose command or entrypoint: exec form as is, a string split like a shell."""
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def is_callboard(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).split(":")[0] == "callboard" or "build" in service


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, PurePosixPath]]:
    """(host path, container path) of a service's bind mounts (short syntax)."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((DEPLOY / source).resolve(), PurePosixPath(target)))
    return mounts


def host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """The host file a container path of a service is, through its bind mounts."""
    path = PurePosixPath(container_path)
    for source, target in sorted(bind_mounts(service), key=lambda m: -len(m[1].parts)):
        if path == target or target in path.parents:
            return source.joinpath(*path.parts[len(target.parts) :])
    return None


def compose_command_lines() -> list[CommandLine]:
    lines = []
    for name, service in compose_services().items():
        if not is_callboard(service):
            continue
        argv = as_list(service.get("entrypoint")) or ["callboard"]
        assert argv[0] == "callboard", f"{rel(COMPOSE)} {name}: entrypoint {argv}"
        argv = [*argv[1:], *as_list(service.get("command"))]
        config = None
        if argv and argv[0] == "run":
            config = host_path(service, argv[1])
            assert config is not None, f"{rel(COMPOSE)} {name}: {argv[1]} is not mounted"
        lines.append(CommandLine(f"{rel(COMPOSE)} service {name}", tuple(argv), config))
    return lines


def seconds(duration: str) -> float:
    """A compose duration (``30s``, ``1m30s``) in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", duration)
    assert parts and duration, f"not a duration: {duration!r}"
    hours, minutes, secs = (float(part or 0) for part in parts.groups())
    return hours * 3600 + minutes * 60 + secs


COMPOSE_STOP_GRACE = "10s"
"""Docker's wait between SIGTERM and SIGKILL unless a service sets stop_grace_period."""


def test_compose_daemons_get_time_to_drain_before_sigkill() -> None:
    for line in compose_command_lines():
        if line.config is None:
            continue
        service = compose_services()[line.where.rsplit(" ", 1)[1]]
        wait = seconds(str(service.get("stop_grace_period", COMPOSE_STOP_GRACE)))
        needed = load_config(line.config).grace_period + DRAIN_TIMEOUT
        assert wait > needed, f"{line.where}: SIGKILL after {wait:g}s, draining takes {needed:g}s"


def test_the_daemons_compose_runs_side_by_side_have_distinct_agent_ids() -> None:
    """Two agents of one id would share a direct address and a status subject."""
    owners: dict[str, str] = {}
    for line in compose_command_lines():
        if line.config is None:
            continue
        for agent in build_agents(load_config(line.config)):
            assert agent.id not in owners, (
                f"agent id {agent.id!r} in {rel(line.config)} and in {owners[agent.id]}"
            )
            owners[agent.id] = rel(line.config)


def nats_nodes() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose_services().items()
        if str(service.get("image", "")).split(":")[0] == "nats"
    }


def flag(argv: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in a command, else None."""
    for i, word in enumerate(argv):
        if word == name and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith(f"{name}="):
            return word.partition("=")[2]
    return None


def node_config(name: str, service: dict[str, Any]) -> Path:
    """The host file of the config a NATS node runs (``--config``, through its mounts)."""
    argv = as_list(service.get("command"))
    container_path = flag(argv, "--config")
    assert container_path, f"{rel(COMPOSE)} {name}: runs without --config: {argv}"
    config = host_path(service, container_path)
    assert config is not None, f"{rel(COMPOSE)} {name}: {container_path} is not mounted"
    assert config.is_file(), f"{rel(COMPOSE)} {name}: runs {rel(config)}, which does not exist"
    return config


def nats_settings(config: Path, block: str | None = None) -> dict[str, str]:
    """The ``key: value`` settings of a nats-server config, top level or of one block."""
    settings: dict[str, str] = {}
    path: list[str] = []
    for raw in config.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].split("//", 1)[0].strip()
        opened = re.match(r"([A-Za-z_]+)\s*[:=]?\s*\{", line)
        if opened:
            path.append(opened[1])
        elif path == ([block] if block else []):
            setting = re.match(r"([A-Za-z_]+)\s*[:=]\s*(\"[^\"]*\"|[^\s\[]+)", line)
            if setting:
                settings[setting[1]] = setting[2].strip('"')
        path = path[: max(0, len(path) - line.count("}"))] if "}" in line else path
    return settings


def port_of(address: str) -> int:
    """``127.0.0.1:4222``, ``nats://host:4222`` or ``4222`` → 4222."""
    return int(address.rsplit(":", 1)[-1])


def nats_includes(config: Path) -> Iterator[Path]:
    """The files a nats-server config includes, and theirs (relative to the includer)."""
    text = config.read_text(encoding="utf-8")
    for name in re.findall(r"^\s*include\s+[\"']?([^\"'\s;]+)", text, re.M):
        included = (config.parent / name).resolve()
        yield included
        if included.is_file():
            yield from nats_includes(included)


def test_compose_runs_a_three_node_nats_cluster_from_the_repositorys_configs() -> None:
    nodes = nats_nodes()
    assert len(nodes) == 3, f"{rel(COMPOSE)}: NATS nodes {sorted(nodes)}"
    configs = set()
    for name, service in nodes.items():
        config = node_config(name, service)
        configs.add(config)
        mounted = host_path(service, "/etc/nats")
        assert mounted is not None, f"{name}: deploy/nats is not mounted"
        for include in nats_includes(config):
            # only the mounted folder is in the container
            assert mounted in include.parents, f"{rel(config)} includes {include}: not mounted"
            # secrets/ is made by gen_dev_secrets.py, never committed
            if "secrets" not in include.relative_to(mounted).parts:
                assert include.is_file(), f"{rel(config)} includes {rel(include)}: no such file"
    assert configs == {DEPLOY / "nats" / "cluster" / f"node-{n}.conf" for n in (1, 2, 3)}


def test_compose_nats_nodes_route_to_each_other_on_their_configs_cluster_ports() -> None:
    nodes = nats_nodes()
    cluster_ports = {
        name: port_of(nats_settings(node_config(name, service), "cluster")["listen"])
        for name, service in nodes.items()
    }
    for name, service in nodes.items():
        argv = as_list(service.get("command"))
        # the configs listen on one machine's loopback: a container listens on its interfaces
        assert flag(argv, "--addr") == "0.0.0.0", f"{name}: clients cannot reach {argv}"
        assert flag(argv, "--cluster") == f"nats://0.0.0.0:{cluster_ports[name]}", name
        routes = {
            (urlsplit(route).hostname, urlsplit(route).port)
            for route in (flag(argv, "--routes") or "").split(",")
        }
        others = {(other, port) for other, port in cluster_ports.items() if other != name}
        assert routes == others, f"{name}: routes {sorted(routes)}, nodes {sorted(others)}"


@pytest.mark.parametrize("line", compose_command_lines(), ids=lambda line: line.where)
def test_compose_callboard_services_reach_every_nats_node_on_its_client_port(
    line: CommandLine,
) -> None:
    service = compose_services()[line.where.rsplit(" ", 1)[1]]
    nodes = nats_nodes()
    url = (service.get("environment") or {}).get("NATS_URL")
    assert url, f"{line.where}: no NATS_URL"
    reached = {}
    for server in url.split(","):
        parts = urlsplit(server.strip())
        assert parts.hostname in nodes, f"{line.where}: {parts.hostname} is not a NATS node"
        reached[parts.hostname] = parts.port
    expected = {
        name: port_of(nats_settings(node_config(name, node))["listen"])
        for name, node in nodes.items()
    }
    assert NATS_CLIENT_PORT in expected.values(), expected
    assert reached == expected, f"{line.where}: NATS_URL {url}; the nodes listen on {expected}"


def test_compose_nats_monitoring_port_is_the_one_checked_and_exported() -> None:
    services = compose_services()
    exporters = {
        name: service
        for name, service in services.items()
        if "nats-exporter" in str(service.get("image", ""))
    }
    exported = {}
    for name, exporter in exporters.items():
        node = str(exporter.get("network_mode", "")).removeprefix("service:")
        assert node in nats_nodes(), f"{name}: not in a NATS node's network namespace"
        exported[node] = as_list(exporter.get("command"))[-1]
    assert sorted(exported) == sorted(nats_nodes()), f"one exporter per node: {exported}"
    for name, service in nats_nodes().items():
        http = nats_settings(node_config(name, service)).get("http", "")
        assert http.startswith("127.0.0.1:"), f"{name}: monitoring on {http or 'no port'}"
        health = " ".join(as_list(service.get("healthcheck", {}).get("test")))
        assert f"http://{http}/healthz" in health, f"{name}: healthcheck {health}"
        assert exported[name] == f"http://{http}", f"the exporter of {name} reads {exported[name]}"
    targets = prometheus_targets(read_yaml(COMPOSE_PROMETHEUS))[NATS_JOB]
    assert sorted(targets) == sorted(f"{node}:7777" for node in exported), targets


NATS_SECRETS = DEPLOY / "nats" / "secrets"
"""Where deploy/nats/gen_dev_secrets.py writes ``<user>.env``, a login per NATS user."""


def nats_users() -> set[str]:
    """The users of the CALLBOARD account (deploy/nats/accounts.conf)."""
    text = (DEPLOY / "nats" / "accounts.conf").read_text(encoding="utf-8")
    return set(re.findall(r"\{\s*user:\s*\"?([\w-]+)", text))


def role_logins() -> dict[str, Path]:
    """Where each compose service and Kubernetes Deployment gets its NATS login from."""
    logins = {}
    for name, service in compose_services().items():
        for env_file in as_list(service.get("env_file")):
            logins[f"{rel(COMPOSE)} service {name}"] = (DEPLOY / env_file).resolve()
    secrets = documented_secrets()
    for name, deployment in deployments().items():
        for container in containers(deployment):
            for source in container.get("envFrom", []):
                secret = source["secretRef"]["name"]
                logins[f"{rel(KUBERNETES)} {name}"] = secrets[secret]
    return logins


def test_every_role_logs_in_as_a_nats_user_of_the_account() -> None:
    """Each compose service and Kubernetes Deployment logs in as a user of the account."""
    users = nats_users()
    assert {"monitor", "orchestrator"} <= users, users
    unknown = {}
    for where, login in role_logins().items():
        assert login.parent == NATS_SECRETS, f"{where}: login from {login}"
        if login.stem not in users:
            unknown[where] = login.stem
    assert not unknown, f"no such user in deploy/nats/accounts.conf: {unknown}"


def nats_permissions(user: str) -> set[str]:
    """The subjects a user's permissions name (deploy/nats/accounts.conf), allow lists only."""
    text = (DEPLOY / "nats" / "accounts.conf").read_text(encoding="utf-8")
    found = re.search(rf"\{{\s*user:\s*\"?{re.escape(user)}\"?,.*?permissions:\s*\$(\w+)", text)
    assert found, f"deploy/nats/accounts.conf has no user {user}"
    block = re.search(rf"^{found[1]}:\s*\{{(.*?)^\}}", text, re.M | re.S)
    assert block, f"deploy/nats/accounts.conf has no permissions {found[1]}"
    assert "deny" not in block[1], "deny lists: read them here too"
    return set(re.findall(r'"([^"]+)"', block[1]))


def compose_daemon_logins() -> list[Any]:
    params = []
    for line in compose_command_lines():
        service = compose_services()[line.where.rsplit(" ", 1)[1]]
        if line.config is None or not service.get("env_file"):
            continue
        user = Path(as_list(service["env_file"])[0]).stem
        params.append(pytest.param(line, user, id=f"{line.where} as {user}"))
    return params


@pytest.mark.parametrize(("line", "user"), compose_daemon_logins())
def test_a_daemons_nats_user_may_serve_every_agent_it_runs(line: CommandLine, user: str) -> None:
    """One connection serves all the agents of a daemon: its user must allow each of them."""
    assert line.config is not None
    config = load_config(line.config)
    allowed = nats_permissions(user)
    denied = []
    for agent in build_agents(config):
        needed = [
            f"{config.prefix}.agent.{agent.id}",
            f"{config.prefix}.status.{agent.id}.>",
            *(f"{config.prefix}.task.{name} callboard" for name in agent.capability_names),
        ]
        denied += [subject for subject in needed if subject not in allowed]
    assert not denied, f"{line.where}: user {user} may not use {denied}"


def prometheus_targets(config: dict[str, Any]) -> dict[str, list[str]]:
    return {
        job["job_name"]: [t for c in job.get("static_configs", []) for t in c["targets"]]
        for job in config["scrape_configs"]
    }


def test_compose_prometheus_scrapes_every_callboard_service_on_its_metrics_port() -> None:
    jobs = prometheus_targets(read_yaml(COMPOSE_PROMETHEUS))
    served: dict[str, set[str]] = {DAEMON_JOB: set(), MONITOR_JOB: set()}
    for line in compose_command_lines():
        address = metrics_address(line)
        if address is None:
            continue
        host, port = address
        assert host == "0.0.0.0", f"{line.where}: metrics on {host}: unreachable from Prometheus"
        name = line.where.rsplit(" ", 1)[1]
        if "profiles" not in compose_services()[name]:  # one-off commands run no server
            health = " ".join(as_list(compose_services()[name]["healthcheck"]["test"]))
            assert f"//127.0.0.1:{port}/healthz" in health, f"{line.where}: checks {health}"
        job = DAEMON_JOB if line.argv[0] == "run" else MONITOR_JOB
        served[job].add(f"{name}:{port}")
    assert served[DAEMON_JOB] and served[MONITOR_JOB], served
    for job, targets in served.items():
        assert set(jobs[job]) == targets, f"{rel(COMPOSE_PROMETHEUS)} job {job}: {jobs[job]}"


def test_compose_prometheus_config_is_the_committed_one_with_compose_targets() -> None:
    ours, theirs = read_yaml(COMPOSE_PROMETHEUS), read_yaml(PROMETHEUS)
    assert ours["global"] == theirs["global"]
    assert ours["rule_files"] == theirs["rule_files"]
    assert list(prometheus_targets(ours)) == list(prometheus_targets(theirs))


def test_compose_prometheus_config_is_valid_where_compose_mounts_it(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    prometheus = compose_services()["prometheus"]
    root = tmp_path / "container"
    for source, target in bind_mounts(prometheus):
        copy = root / target.relative_to("/")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy)
    config = root / "etc" / "prometheus" / "prometheus.yml"
    result = run_tool([promtool, "check", "config", str(config)])
    assert result.returncode == 0, f"promtool check config:\n{result.stdout}{result.stderr}"


def test_compose_grafana_gets_the_dashboards_and_a_datasource_it_can_reach() -> None:
    services = compose_services()
    grafana = services["grafana"]
    provider = read_yaml(GRAFANA_DASHBOARDS)["providers"][0]
    dashboards = host_path(grafana, provider["options"]["path"])
    assert dashboards == DEPLOY / "grafana" / "dashboards", f"dashboards from {dashboards}"
    provisioning = "/etc/grafana/provisioning"
    assert host_path(grafana, f"{provisioning}/dashboards/callboard.yml") == GRAFANA_DASHBOARDS
    datasources = host_path(grafana, f"{provisioning}/datasources/prometheus.yml")
    assert datasources == COMPOSE_DATASOURCES, f"datasources from {datasources}"
    [ours] = read_yaml(COMPOSE_DATASOURCES)["datasources"]
    [theirs] = read_yaml(GRAFANA_DATASOURCES)["datasources"]
    assert {**ours, "url": None} == {**theirs, "url": None}, "only the url may differ"
    url = urlsplit(ours["url"])
    assert url.hostname in services and url.port == 9090, ours["url"]


# --- Kubernetes --------------------------------------------------------------------------------


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path == KUSTOMIZATION:
            continue
        found += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def deployments() -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in of_kind("Deployment")}


def containers(deployment: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from deployment["spec"]["template"]["spec"]["containers"]


def container_port(container: dict[str, Any], port: int | str) -> int | None:
    for entry in container.get("ports", []):
        if port in (entry.get("name"), entry["containerPort"]):
            return int(entry["containerPort"])
    return None


def config_map(name: str) -> dict[str, str]:
    [found] = [doc for doc in of_kind("ConfigMap") if doc["metadata"]["name"] == name]
    return dict(found["data"])


def mounted_config(deployment: dict[str, Any], container: dict[str, Any], path: str) -> str:
    """The ConfigMap text a container reads at ``path``, through its volumes."""
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" not in volume or PurePosixPath(mount["mountPath"]) != (
            PurePosixPath(path).parent
        ):
            continue
        items = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])}
        name = PurePosixPath(path).name
        return config_map(volume["configMap"]["name"])[items.get(name, name)]
    pytest.fail(f"{deployment['metadata']['name']}: no ConfigMap is mounted at {path}")


def kubernetes_command_lines() -> list[CommandLine]:
    lines = []
    for name, deployment in deployments().items():
        for container in containers(deployment):
            argv = [*as_list(container.get("command")), *as_list(container.get("args"))]
            lines.append(CommandLine(f"{rel(KUBERNETES)} Deployment {name}", tuple(argv)))
    return lines


def test_manifests_parse_and_name_everything_in_one_namespace() -> None:
    [namespace] = of_kind("Namespace")
    name = namespace["metadata"]["name"]
    for path, doc in manifests():
        where = f"{rel(path)} {doc.get('kind')}"
        assert doc.get("apiVersion") and doc.get("kind"), f"{where}: no apiVersion or kind"
        assert doc.get("metadata", {}).get("name"), f"{where}: no metadata.name"
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == name, f"{where}: not in namespace {name}"
    assert not of_kind("Secret"), "credentials are created by the operator, never committed"
    kustomization = read_yaml(KUSTOMIZATION)
    assert kustomization["namespace"] == name
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {KUSTOMIZATION.name}
    assert set(kustomization["resources"]) == files, "kustomization.yaml misses a manifest"


def test_kubectl_kustomize_builds_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = run_tool([kubectl, "kustomize", str(KUBERNETES)])
    assert result.returncode == 0, f"kubectl kustomize:\n{result.stderr}"
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(result.stdout))
    assert kinds == sorted(doc["kind"] for _, doc in manifests())


@pytest.mark.parametrize("name", sorted(deployments()))
def test_a_deployment_probes_healthz_on_the_port_it_serves_metrics_on(name: str) -> None:
    deployment = deployments()[name]
    template = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items(), f"{name}: selector"
    for container in containers(deployment):
        line = CommandLine(f"{name}", tuple(as_list(container.get("args"))))
        address = metrics_address(line)
        assert address is not None, f"{name}: `{line.command}` serves no metrics"
        host, port = address
        # the kubelet and Prometheus connect to the pod's IP, never to its loopback
        assert host == "0.0.0.0", f"{name}: metrics on {host}"
        assert container_port(container, port) == port, f"{name}: {port} is no containerPort"
        for probe in ("livenessProbe", "readinessProbe"):
            get = container.get(probe, {}).get("httpGet")
            assert get, f"{name}: no {probe}"
            assert get["path"] == "/healthz", f"{name}: {probe} on {get['path']}"
            assert container_port(container, get["port"]) == port, f"{name}: {probe} port"
        annotations = template["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "true", name
        assert annotations.get("prometheus.io/port") == str(port), name


@pytest.mark.parametrize("name", sorted(deployments()))
def test_a_deployment_runs_non_root_read_only_without_capabilities(name: str) -> None:
    pod = deployments()[name]["spec"]["template"]["spec"]
    uid = dockerfile_values("USER")[-1].partition(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True, name
    assert pod["securityContext"]["runAsUser"] == int(uid), f"{name}: not the image's user"
    assert pod.get("automountServiceAccountToken") is False, name
    for container in containers(deployments()[name]):
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        resources = container["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"], name
        assert resources["limits"]["memory"], f"{name}: no memory limit"


def documented_secrets() -> dict[str, Path]:
    """Secret name → the env file it is made from, as kustomization.yaml says to."""
    text = KUSTOMIZATION.read_text(encoding="utf-8").replace("\\\n#", "")
    found = re.findall(r"create secret generic ([\w-]+)\s+--from-env-file=(\S+)", text)
    return {name: ROOT / path for name, path in found}


@pytest.mark.parametrize("name", sorted(deployments()))
def test_a_deployment_refers_only_to_volumes_keys_and_secrets_that_exist(name: str) -> None:
    deployment = deployments()[name]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    for container in containers(deployment):
        mounts = {m["name"] for m in container.get("volumeMounts", [])}
        assert mounts <= set(volumes), f"{name}: mounts undeclared volumes {mounts - set(volumes)}"
        for volume in volumes.values():
            if "configMap" in volume:
                data = config_map(volume["configMap"]["name"])
                for item in volume["configMap"].get("items", []):
                    assert item["key"] in data, f"{name}: the ConfigMap has no {item['key']}"
        env = {e["name"]: e for e in container.get("env", [])}
        for variable in env.values():
            ref = variable.get("valueFrom", {}).get("configMapKeyRef")
            if ref:
                data = config_map(ref["name"])
                assert ref["key"] in data, f"{name}: {variable['name']} from missing {ref['key']}"
        assert "NATS_URL" in env, f"{name}: no NATS_URL"
        secrets = [s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s]
        assert secrets, f"{name}: no NATS login (envFrom a Secret)"
        # the Secret is not committed: kustomization.yaml says how to make it
        missing = set(secrets) - set(documented_secrets())
        assert not missing, f"{name}: kustomization.yaml does not say how to make {missing}"


def daemon_configs() -> list[tuple[str, dict[str, Any], str]]:
    """(deployment, deployment, TOML text) of every Deployment that runs a daemon."""
    found = []
    for name, deployment in deployments().items():
        for container in containers(deployment):
            argv = as_list(container.get("args"))
            if argv[0] == "run":
                found.append((name, deployment, mounted_config(deployment, container, argv[1])))
    return found


def load_config_text(text: str, tmp_path: Path, name: str) -> DaemonConfig:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_the_daemon_deployments_run_configs_that_load_and_stop_in_time(tmp_path: Path) -> None:
    configs = daemon_configs()
    assert {name for name, _, _ in configs} == {"callboard-agents", "callboard-llm-agents"}
    for name, deployment, text in configs:
        config = load_config_text(text, tmp_path, name)
        spec = deployment["spec"]
        grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > config.grace_period + DRAIN_TIMEOUT, f"{name}: SIGKILL before the drain"
        fixed_ids = [agent.id for agent in config.agents if agent.id]
        if fixed_ids:
            # two pods would serve agents of one id, also during a rolling update
            assert spec["replicas"] == 1, f"{name}: {spec['replicas']} pods with ids {fixed_ids}"
            assert spec.get("strategy", {}).get("type") == "Recreate", name


def comparable(config: DaemonConfig) -> dict[str, Any]:
    """A config's agents and settings, less its connection (from the environment)."""
    data = msgspec.to_builtins(config)
    data.pop("nats")  # NATS_URL and the login come from the environment
    return data


@pytest.mark.parametrize("key", ["agents.toml", "llm-agents.toml"])
def test_the_configmap_runs_the_agents_of_the_repositorys_config(key: str, tmp_path: Path) -> None:
    config = load_config_text(config_map("callboard-config")[key], tmp_path, "config")
    assert comparable(config) == comparable(load_config(DEPLOY / key)), (
        f"the ConfigMap's {key} and deploy/{key} run different agents"
    )


def test_metrics_services_select_pods_and_scrape_their_metrics_ports() -> None:
    services = of_kind("Service")
    assert services, "no Service for Prometheus"
    selected = set()
    for service in services:
        name = service["metadata"]["name"]
        annotations = service["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "true", name
        selector = service["spec"]["selector"]
        pods = {
            d_name: d
            for d_name, d in deployments().items()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        }
        assert pods, f"Service {name} selects no Deployment's pods"
        selected |= set(pods)
        for port in service["spec"]["ports"]:
            for d_name, deployment in pods.items():
                for container in containers(deployment):
                    number = container_port(container, port.get("targetPort", port["port"]))
                    assert number == port["port"], f"Service {name} → {d_name}: port {number}"
                    assert annotations.get("prometheus.io/port") == str(number), name
    assert selected == set(deployments()), f"not scraped: {set(deployments()) - selected}"


# --- every command line, against the real CLI --------------------------------------------------


def all_command_lines() -> list[CommandLine]:
    return [
        *(unit_command_line(unit) for unit in UNITS),
        CommandLine(f"{rel(DOCKERFILE)} CMD", tuple(exec_form("CMD"))),
        *compose_command_lines(),
        *kubernetes_command_lines(),
    ]


@pytest.mark.parametrize("line", all_command_lines(), ids=lambda line: line.where)
def test_every_callboard_command_line_parses_and_its_config_loads(line: CommandLine) -> None:
    namespace = parse_cli(line)
    if namespace.command == "run" and line.config is not None:
        assert line.config.is_file(), f"{line.where}: {rel(line.config)} does not exist"
        load_config(line.config)


def test_a_dev_password_never_starts_with_a_dash() -> None:
    """``nats context save --password -x…`` takes such a password for a flag (seen once
    in 64 logins: a system test failed on it)."""
    path = ROOT / "deploy" / "nats" / "gen_dev_secrets.py"
    spec = importlib.util.spec_from_file_location("gen_dev_secrets", path)
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    passwords = [generator.new_password() for _ in range(2000)]
    assert not [p for p in passwords if p.startswith("-")]
    assert len(set(passwords)) == 2000 and min(map(len, passwords)) == 32
