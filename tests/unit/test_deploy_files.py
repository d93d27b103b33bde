"""deploy/ is what an operator copies: check what can be checked without a container engine."""
from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def settings_variables() -> set[str]:
    text = (ROOT / "leaderboard" / "settings.py").read_text()
    return set(re.findall(r'env(?:bool|int|list)?\("([A-Z0-9_]+)"', text))


def test_the_environment_example_lists_every_variable_the_settings_read():
    example = (DEPLOY / "env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, flags=re.M))
    missing = settings_variables() - listed
    assert not missing, f"env.example lacks {sorted(missing)}"


def test_compose_runs_site_worker_beat_database_broker_storage_and_a_gpu_runner():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"web", "site-worker", "beat", "postgres", "rabbitmq", "minio", "runner", "migrate"} <= set(services)
    assert services["site-worker"]["command"][:5] == ["celery", "-A", "leaderboard", "worker", "-Q"]
    assert services["runner"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    for name in ("web", "site-worker", "beat"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and env["CELERY_BROKER_URL"].startswith("amqp://")
    for service in services.values():
        build = service.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()


def test_rabbitmq_keeps_long_evaluations_from_being_delivered_twice():
    conf = (DEPLOY / "rabbitmq.conf").read_text()
    timeout_ms = int(re.search(r"^consumer_timeout\s*=\s*(\d+)", conf, flags=re.M).group(1))
    from runner.catalogue import CATALOGUE

    longest = max(t.time_limit_s for b in CATALOGUE for t in b.tasks)
    assert timeout_ms / 1000 > longest


def test_kubernetes_manifests_parse_and_deployments_select_their_own_pods():
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "leaderboard.yaml").read_text()) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "leaderboard-runner-gpu") in kinds and ("Job", "leaderboard-migrate") in kinds
    for doc in docs:
        if doc["kind"] == "Deployment":
            spec = doc["spec"]
            assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    runner = next(d for d in docs if d["metadata"]["name"] == "leaderboard-runner-gpu")
    limits = runner["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1


def test_systemd_units_are_well_formed():
    units = sorted((DEPLOY / "systemd").glob("*.service"))
    assert len(units) == 3
    for unit in units:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str
        parser.read(unit)
        assert {"Unit", "Service", "Install"} <= set(parser.sections()), unit
        assert parser["Service"]["ExecStart"].startswith("/opt/")
    if shutil.which("systemd-analyze"):
        result = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, units)],
                                capture_output=True, text=True)
        problems = [line for line in (result.stdout + result.stderr).splitlines()
                    if "Unknown" in line or "Invalid" in line or "Failed to parse" in line]
        assert not problems, problems


def runner_modules_the_site_imports() -> set[str]:
    """Every runner/*.py the site reaches, following runner's own imports from the site's (ast-read)."""
    import ast

    def runner_imports(path: Path) -> set[str]:
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            found |= {n for n in names if n == "runner" or n.startswith("runner.")}
        return found

    def file_of(module: str) -> Path:
        base = ROOT.joinpath(*module.split("."))
        return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")

    todo = set().union(*(runner_imports(p) for p in (ROOT / "leaderboard").rglob("*.py")))
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo |= runner_imports(file_of(module))
    return {str(file_of(m).relative_to(ROOT)) for m in seen}


def test_the_site_image_copies_every_runner_module_the_site_imports():
    dockerfile = (DEPLOY / "Dockerfile.site").read_text()
    copied = set(re.search(r"^COPY ((?:runner/\S+ )+)\./runner/$", dockerfile, flags=re.M).group(1).split())
    needed = runner_modules_the_site_imports()
    assert "runner/spec.py" in needed and "runner/catalogue.py" in needed
    assert needed <= copied, f"Dockerfile.site lacks {sorted(needed - copied)} (the site would fail to import them)"
    assert not [p for p in needed if re.search(r"^\s*(import|from) torch", (ROOT / p).read_text(), flags=re.M)], \
        "the site never imports torch"
