"""Deployment files lint clean with real tools, and hold what they promise.

Every linter is also run once on a deliberately bad input, so a linter that
silently passes everything (wrong flags, no input read) fails the suite.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import DEPLOY, REPO, assert_ok, run_tool

K8S = DEPLOY / "kubernetes"
YAMLLINT_CONFIG = DEPLOY / ".yamllint"
SHELL_SCRIPTS = sorted(DEPLOY.rglob("*.sh"))
IAM_POLICY = DEPLOY / "iam" / "gtmon-policy.json"
SYSTEMD_UNIT = DEPLOY / "systemd" / "gtmon.service"


def _k8s_docs() -> dict[str, dict[str, Any]]:
    """Manifests by kind (one document per file here)."""
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        (doc,) = list(yaml.safe_load_all(path.read_text()))
        docs[doc["kind"]] = doc | {"__file__": path.name}
    return docs


# ---- Dockerfile -----------------------------------------------------------------------


def test_hadolint_dockerfile() -> None:
    proc = run_tool("hadolint", "--no-color", DEPLOY / "Dockerfile")
    assert_ok(proc)
    assert proc.stdout.strip() == ""


def test_hadolint_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install curl\n")
    assert run_tool("hadolint", "--no-color", bad).returncode != 0


def test_dockerfile_contents() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert any(ln.startswith("FROM python:3.11-slim") for ln in lines)
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"0", "root"}, "must run as non-root"
    # The daemon only by default (no extra: no moto in the image), at the versions CI tested.
    assert 'ARG GTMON_EXTRAS=""' in lines
    assert 'pip install --no-cache-dir -c constraints.txt ".${GTMON_EXTRAS}"' in text
    healthcheck = text[text.index("HEALTHCHECK --") :].split("\n\n")[0]
    # The probe that works with the documented web config (TLS, basic auth): see
    # tests/security/test_probes.py, which runs this very command against a daemon.
    assert 'CMD ["gtmon", "health", "--config", "/etc/gtmon/config.yaml"]' in healthcheck
    assert 'ENTRYPOINT ["gtmon"]' in lines
    assert 'CMD ["run", "--config", "/etc/gtmon/config.yaml"]' in lines
    assert "EXPOSE 9108" in lines
    # Everything COPY'd exists in the repository (build context: repo root).
    for line in lines:
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (REPO / src).exists(), f"COPY source {src} missing"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for needed in ("pyproject.toml", "README.md", "constraints.txt", "monitor/"):
        assert f"!{needed}" in ignore


# ---- YAML -----------------------------------------------------------------------------


def test_yamllint_everything_shipped() -> None:
    shipped = sorted({*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")})
    assert len(shipped) >= 15
    proc = run_tool("yamllint", "--strict", "-f", "parsable", "-c", YAMLLINT_CONFIG, *shipped)
    assert_ok(proc)


def test_yamllint_rejects_bad_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("key: 1\nkey: 2\nlist:\n- a\n-  b\n")
    assert run_tool("yamllint", "--strict", "-c", YAMLLINT_CONFIG, bad).returncode != 0


# ---- shell ----------------------------------------------------------------------------


def test_shellcheck_scripts() -> None:
    assert SHELL_SCRIPTS, "no shell scripts found"
    proc = run_tool("shellcheck", "--severity=style", *SHELL_SCRIPTS)
    assert_ok(proc)


def test_shellcheck_rejects_a_bad_script(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/bash\nfor f in $(ls *.txt); do cat $f; done\n")
    assert run_tool("shellcheck", bad).returncode != 0


def test_ci_system_deps_is_idempotent_when_tools_exist() -> None:
    # Tools are present here (the other tests need them): the script must be a no-op.
    proc = run_tool("bash", DEPLOY / "ci-system-deps.sh")
    assert_ok(proc)
    assert "already installed" in proc.stdout


# ---- Kubernetes -------------------------------------------------------------------------


def test_kubernetes_validate_builtin_kinds() -> None:
    docs = _k8s_docs()
    builtin = [K8S / d["__file__"] for kind, d in docs.items() if kind != "ServiceMonitor"]
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount"} <= set(docs)
    proc = run_tool("kubernetes-validate", "--strict", *builtin)
    assert_ok(proc)
    output = proc.stdout + proc.stderr
    assert "WARN" not in output and "ERROR" not in output, output
    assert output.count(" passed ") == len(builtin), output


def test_kubernetes_validate_rejects_unknown_fields(tmp_path: Path) -> None:
    doc = yaml.safe_load((K8S / "deployment.yaml").read_text())
    doc["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}  # misspelt
    bad = tmp_path / "deployment.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert run_tool("kubernetes-validate", "--strict", bad).returncode != 0


def test_servicemonitor_structure() -> None:
    # A CRD: kubernetes-validate has no offline schema for it, so check what
    # the Prometheus Operator needs to find and scrape both pods.
    docs = _k8s_docs()
    monitor, service = docs["ServiceMonitor"], docs["Service"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) - {"__file__"} == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) <= {"selector", "endpoints", "jobLabel", "namespaceSelector"}
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= {
            "port",
            "path",
            "interval",
            "scrapeTimeout",
            "scheme",
            "tlsConfig",
            "basicAuth",
            "relabelings",
            "metricRelabelings",
            "honorLabels",
        }
        assert endpoint["port"] in port_names
        assert endpoint.get("path", "/metrics") == "/metrics"
        for key in ("interval", "scrapeTimeout"):
            assert re.fullmatch(r"\d+(ms|s|m|h)", endpoint[key]), endpoint[key]
    # Without jobLabel the job label is the Service name: alerts match job="gtmon".
    assert "jobLabel" not in monitor["spec"] and service["metadata"]["name"] == "gtmon"


def _json_patch(doc: Any, operations: list[dict[str, Any]]) -> Any:
    """The `add` and `replace` operations of RFC 6902, as kustomize applies them."""
    for operation in operations:
        assert operation["op"] in ("add", "replace"), operation
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"][1:].split("/")]
        target = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            if last == "-":
                target.append(operation["value"])
            else:
                target.insert(int(last), operation["value"])
        else:
            assert operation["op"] == "add" or last in target, operation
            target[last] = operation["value"]
    return doc


def test_web_config_component_patches_valid_manifests(tmp_path: Path) -> None:
    component = K8S / "web-config"
    kustomization = yaml.safe_load((component / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    docs = _k8s_docs()
    patched = {}
    for entry in kustomization["patches"]:
        kind = entry["target"]["kind"]
        assert docs[kind]["metadata"]["name"] == entry["target"]["name"]
        doc = {k: v for k, v in docs[kind].items() if k != "__file__"}
        patched[kind] = _json_patch(doc, yaml.safe_load((component / entry["path"]).read_text()))
    deployment = patched["Deployment"]
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(deployment))
    assert_ok(run_tool("kubernetes-validate", "--strict", path))
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/etc/gtmon-web"]["name"]]["secret"]["secretName"] == "gtmon-web-config"
    endpoint = patched["ServiceMonitor"]["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https" and {"tlsConfig", "basicAuth"} <= set(endpoint)
    # The overlay's config names the web config where the Secret is mounted.
    assert "web_config_file: /etc/gtmon-web/web-config.yml" in (component / "kustomization.yaml").read_text()


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    image = _k8s_docs()["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.split(":")[0] in {i["name"] for i in kustomization["images"]}


def test_deployment_contract() -> None:
    docs = _k8s_docs()
    deployment, service = docs["Deployment"], docs["Service"]
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["args"] == ["run", "--config", "/etc/gtmon/config.yaml"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9108}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/gtmon"]["readOnly"] is True
    assert "/tmp" in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert (
        volumes[mounts["/etc/gtmon"]["name"]]["configMap"]["name"]
        == docs["ConfigMap"]["metadata"]["name"]
    )
    assert {p["port"] for p in service["spec"]["ports"]} == {9108}


def test_configmap_config_validates_with_gtmon(tmp_path: Path) -> None:
    docs = _k8s_docs()
    text = docs["ConfigMap"]["data"]["config.yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    proc = run_tool("gtmon", "config", "validate", path)
    assert_ok(proc)
    config = yaml.safe_load(text)
    assert config["metrics"]["port"] == 9108
    # Checkpoints must go to a writable volume: the root filesystem is read-only.
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    writable = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
    checkpoint = config["streams"]["checkpoint_path"]
    assert any(checkpoint.startswith(mount + "/") for mount in writable), checkpoint


def test_gtmon_config_validate_rejects_a_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("regions: [us-east-1]\nmetrics:\n  prot: 9108\n")
    assert run_tool("gtmon", "config", "validate", path).returncode != 0


# ---- compose and Grafana provisioning ---------------------------------------------------


def test_compose_file_is_consistent() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"gtmon", "prometheus", "grafana"} <= set(services)
    gtmon = services["gtmon"]
    assert (DEPLOY / Path(gtmon["build"]["context"]) / gtmon["build"]["dockerfile"]).exists()
    assert gtmon["command"][0] == "sandbox"
    # The sandbox needs the emulator, which the default (daemon) image leaves out.
    assert gtmon["build"]["args"]["GTMON_EXTRAS"] == "[sandbox]"
    mounts: dict[str, str] = {}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            assert (DEPLOY / source).exists(), f"{name}: bind mount {source} missing"
            mounts[target] = source
    prom_config = next(
        a for a in services["prometheus"]["command"] if a.startswith("--config.file=")
    )
    prom_path = prom_config.split("=", 1)[1].replace("/etc/prometheus/", "")
    assert (DEPLOY / "prometheus" / prom_path).exists()
    prom = yaml.safe_load((DEPLOY / "prometheus" / prom_path).read_text())
    targets = [
        t
        for job in prom["scrape_configs"]
        if job["job_name"] == "gtmon"
        for sc in job["static_configs"]
        for t in sc["targets"]
    ]
    assert targets == ["gtmon:9108"]
    # Grafana: provisioned datasource and the dashboard directory.
    provisioning = DEPLOY / mounts["/etc/grafana/provisioning"]
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "gtmon.yml").read_text())
    (provider,) = providers["providers"]
    dash_dir = provider["options"]["path"]
    assert (DEPLOY / mounts[dash_dir] / "gtmon.json").exists()


# ---- systemd ----------------------------------------------------------------------------


def _unit_for_verify(tmp_path: Path, text: str) -> Path:
    # systemd-analyze verify checks that ExecStart's binary exists: point it at
    # a stub, everything else is verified as shipped.
    stub = tmp_path / "gtmon"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = tmp_path / "gtmon.service"
    unit.write_text(text.replace("/usr/local/bin/gtmon", str(stub)))
    return unit


def test_systemd_unit_verifies_clean(tmp_path: Path) -> None:
    unit = _unit_for_verify(tmp_path, SYSTEMD_UNIT.read_text())
    proc = run_tool("systemd-analyze", "verify", unit)
    assert_ok(proc)
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stderr


def test_systemd_verify_reports_a_bad_setting(tmp_path: Path) -> None:
    text = SYSTEMD_UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=bogus")
    proc = run_tool("systemd-analyze", "verify", _unit_for_verify(tmp_path, text))
    assert proc.returncode != 0 or proc.stderr.strip()


def test_systemd_unit_hardening(tmp_path: Path) -> None:
    text = SYSTEMD_UNIT.read_text()
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["ExecStart"].endswith("run --config /etc/gtmon/config.yaml")
    assert settings.get("DynamicUser") == "yes" or settings.get("User") not in {None, "root"}
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert settings.get(key) == value, key
    # systemd's own exposure score (0 safe .. 10 unsafe, threshold in tenths).
    unit = _unit_for_verify(tmp_path, text)
    proc = run_tool("systemd-analyze", "security", "--offline=yes", "--threshold=25", unit)
    assert_ok(proc)


# ---- IAM --------------------------------------------------------------------------------


def _parliament(policy: str) -> Any:
    return run_tool("parliament", "--json", "--include-community-auditors", stdin=policy)


def test_parliament_finds_nothing() -> None:
    proc = _parliament(IAM_POLICY.read_text())
    assert_ok(proc)
    assert proc.stdout.strip() == "", proc.stdout


def test_parliament_flags_a_broad_policy() -> None:
    broad = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "dynamodb:GetRecords",
                "Resource": "arn:aws:dynamodb:*:123456789012:table/Orders",
            },
        ],
    }
    proc = _parliament(json.dumps(broad))
    assert proc.returncode != 0 and "RESOURCE_MISMATCH" in proc.stdout


def test_iam_policy_is_least_privilege() -> None:
    policy = json.loads(IAM_POLICY.read_text())
    statements = {s["Sid"]: s for s in policy["Statement"]}
    for sid, statement in statements.items():
        assert statement["Effect"] == "Allow"
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        assert all("*" not in a for a in actions), sid
        resources = (
            statement["Resource"]
            if isinstance(statement["Resource"], list)
            else [statement["Resource"]]
        )
        if resources == ["*"]:
            assert actions == ["dynamodb:ListStreams"], f"{sid}: Resource * only for ListStreams"
        else:
            assert all(r.startswith("arn:aws:dynamodb:*:123456789012:table/") for r in resources), (
                sid
            )
    # The daemon's needs are covered.
    allowed = {
        (a, r)
        for s in statements.values()
        for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
        for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
    }
    canary = "arn:aws:dynamodb:*:123456789012:table/gtmon-canary"
    for action in ("PutItem", "GetItem", "DescribeTable", "CreateTable", "UpdateTable"):
        assert (f"dynamodb:{action}", canary) in allowed, action
    for action in ("GetRecords", "GetShardIterator", "DescribeStream"):
        assert any(a == f"dynamodb:{action}" and r.endswith("/stream/*") for a, r in allowed), (
            action
        )


@pytest.mark.parametrize("path", [IAM_POLICY], ids=["gtmon-policy.json"])
def test_policy_is_pretty_json(path: Path) -> None:
    text = path.read_text()
    assert text == json.dumps(json.loads(text), indent=2) + "\n"


# ---- the gtmon command lines the deployment files use ------------------------------------


def _flags(args: list[str]) -> list[str]:
    return [a.split("=")[0] for a in args if a.startswith("--")]


def _help(*command: str) -> str:
    proc = run_tool("gtmon", *command, "--help")
    assert_ok(proc)
    return proc.stdout


def test_command_lines_match_the_cli() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    sandbox = compose["services"]["gtmon"]["command"]
    deployment = _k8s_docs()["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    unit = SYSTEMD_UNIT.read_text()
    exec_start = re.search(r"^ExecStart=\S+ (.+)$", unit, re.M).group(1).split()  # type: ignore[union-attr]
    dockerfile_cmd = json.loads(
        re.search(r"^CMD (\[.+\])$", (DEPLOY / "Dockerfile").read_text(), re.M).group(1)  # type: ignore[union-attr]
    )
    healthchecks = [
        json.loads(
            re.search(r"^\s+CMD (\[.+\])$", (DEPLOY / "Dockerfile").read_text(), re.M).group(1)  # type: ignore[union-attr]
        ),
        compose["services"]["gtmon"]["healthcheck"]["test"][1:],
    ]
    for command in healthchecks:
        assert command[:2] == ["gtmon", "health"], command
    for args in (sandbox, deployment, exec_start, dockerfile_cmd, *(c[1:] for c in healthchecks)):
        text = _help(args[0])
        for flag in _flags(args):
            assert flag in text, f"gtmon {args[0]} has no {flag} (used in {args})"
    assert "--metrics-port" in sandbox and "9108" in sandbox
    validate = re.search(r"^ExecStartPre=\S+ (.+)$", unit, re.M).group(1).split()  # type: ignore[union-attr]
    assert validate[:2] == ["config", "validate"]
    _help("config", "validate")
