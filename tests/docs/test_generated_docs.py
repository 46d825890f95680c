"""docs/metrics.md and docs/configuration.md are generated from the code
(scripts/gen_metrics_doc.py): the committed files must be exactly what the code
generates, so a metric or config field cannot change without its docs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gen_metrics_doc.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gtmon_gen_metrics_doc", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _load()
FIX = "run `python scripts/gen_metrics_doc.py` and commit the result"


@pytest.mark.parametrize("name", ["metrics.md", "configuration.md"])
def test_committed_doc_is_what_the_code_generates(name: str) -> None:
    path = REPO / "docs" / name
    render = {"metrics.md": GEN.render_metrics, "configuration.md": GEN.render_configuration}[name]
    assert path.exists(), f"docs/{name} is missing: {FIX}"
    assert path.read_text(encoding="utf-8") == render(), f"docs/{name} is stale: {FIX}"


def test_check_mode_exits_zero_on_committed_docs() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_metric_and_label_is_documented() -> None:
    from monitor.metrics import METRIC_DOCS

    text = GEN.render_metrics()
    for name, (kind, labels, help_text) in METRIC_DOCS.items():
        assert f"| `{name}` | {kind} |" in text
        assert help_text in text
        for label in labels:
            assert f"| `{label}` |" in text


def test_every_config_field_is_documented() -> None:
    from monitor.config import Config

    text = GEN.render_configuration()

    def walk(model: type, prefix: str = "") -> list[str]:
        paths = []
        for name, field in model.model_fields.items():
            path = prefix + name
            paths.append(path)
            inner, is_list = GEN._inner_model(field.annotation)
            if inner is not None:
                paths += walk(inner, path + ("[]." if is_list else "."))
        return paths

    for path in walk(Config):
        section = (
            "." not in path
            and "[" not in path
            and GEN._inner_model(Config.model_fields[path].annotation)[0]
        )
        assert (f"## `{path}`" if section else f"| `{path}` |") in text, path


def test_generator_refuses_an_undocumented_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor import metrics

    monkeypatch.setitem(
        metrics.METRIC_DOCS, "gtmon_new_thing_total", ("counter", ("table",), "New.")
    )
    with pytest.raises(SystemExit, match="gtmon_new_thing_total has no ACROSS_REPLICAS"):
        GEN.render_metrics()


def test_readme_links_both_references() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "docs/metrics.md" in readme and "docs/configuration.md" in readme
