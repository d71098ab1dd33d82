"""Lints and renders helm/costd through Helm's own library, and reads the Dockerfile through
Docker's own parser, for tests/api/chart.rs. Run it with .tools/venv/bin/python, where
scripts/install-tools installs what it imports.

Reads a JSON request on stdin:
  {"chart": "/abs/helm/costd",
   "cases": [{"name": "...", "values": "/abs/set.yaml" or null, "values_text": "yaml" or null,
              "set": {"dotted.key": value},
              "extra_templates": {"templates/x.yaml": "text"}}],
   "dockerfile": "/abs/Dockerfile" or null}
and writes {"cases": [one result per case, see `check_case`], "dockerfile": [instructions]} on
stdout. Exits non-zero only when it cannot do its job (a tool missing, a bad request); a chart that
fails is a result, not an error.

Why it works the way it does:
- helm-sdkpy's Lint takes a chart path only, so each case is linted from a copy of the chart whose
  values.yaml is the case's values merged over the chart's own here, the way Helm coalesces a
  values file (`merge`), as `helm lint -f set.yaml` would see them.
- Its lint messages come back without their text, so the merged values are also checked against
  values.schema.json with the `jsonschema` package, to say which key a failing set got wrong.
- helm-sdkpy has no template action. In lint mode Helm logs a template's `fail` message instead of
  stopping, so after the lint a probe template added to the copy `include`s every template file
  (Helm names each by its path) and fails with its base64 rendering, and the copy is linted again
  with stderr read. This is Helm's engine, values and functions, not an imitation of them.
- Helm's lint does not check rendered objects against Kubernetes' API schema (an unknown field or
  a wrong type in a Deployment passes), so every rendered object is also validated against the
  strict Kubernetes JSON schemas of kubernetes-validate, for the chart's oldest supported
  Kubernetes version and the newest the package knows. Custom resources (the ServiceMonitor) have
  no schema there and are listed as unvalidated.
"""

import asyncio
import base64
import contextlib
import copy
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

PROBE = "templates/zz-costd-render-probe.yaml"
MARKER = re.compile(r"costd-render:([^:\s\"]+):([A-Za-z0-9+/=]*)")
SEVERITIES = {0: "unknown", 1: "info", 2: "warning", 3: "error"}


def main() -> int:
    request = json.load(sys.stdin)
    chart = Path(request["chart"]).resolve()
    with tempfile.TemporaryDirectory(prefix="costd-chart-") as scratch:
        # Helm keeps a cache and a config under $HOME otherwise; it reads them when it loads.
        for variable in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            os.environ[variable] = os.path.join(scratch, variable.lower())
        try:
            import dockerfile
            import helm_sdkpy
            import jsonschema
            import kubernetes_validate
            import yaml
        except ImportError as error:
            print(f"helm_chart.py: {error}; scripts/install-tools installs the chart tools", file=sys.stderr)
            return 2
        tools = Tools(helm_sdkpy, jsonschema, kubernetes_validate, yaml)
        results = [
            check_case(tools, chart, case, Path(scratch) / f"case-{index}")
            for index, case in enumerate(request.get("cases") or [])
        ]
    instructions = None
    if request.get("dockerfile"):
        instructions = [
            {"cmd": command.cmd, "flags": list(command.flags), "value": list(command.value), "json": command.json}
            for command in dockerfile.parse_file(request["dockerfile"])
        ]
    json.dump({"cases": results, "dockerfile": instructions}, sys.stdout)
    return 0


class Tools:
    def __init__(self, helm_sdkpy, jsonschema, kubernetes_validate, yaml):
        self.helm = helm_sdkpy
        self.jsonschema = jsonschema
        self.kube = kubernetes_validate
        self.yaml = yaml
        self.config = helm_sdkpy.Configuration()

    def lint(self, chart: Path) -> dict:
        return asyncio.run(self.helm.Lint(self.config).run(str(chart)))


def check_case(tools: Tools, chart: Path, case: dict, workdir: Path) -> dict:
    defaults = load_yaml(tools, chart / "values.yaml") or {}
    if case.get("values_text") is not None:
        overlay = tools.yaml.safe_load(case["values_text"])
    elif case.get("values"):
        overlay = load_yaml(tools, Path(case["values"]))
    else:
        overlay = {}
    merged = merge(defaults, overlay or {})
    for dotted, value in (case.get("set") or {}).items():
        set_path(merged, dotted, value)

    copy_dir = workdir / chart.name
    shutil.copytree(chart, copy_dir)
    if case.get("values") or case.get("values_text") is not None or case.get("set"):
        # JSON is YAML: the copy's values are exactly what was merged, whatever its comments said.
        (copy_dir / "values.yaml").write_text(json.dumps(merged, indent=2))
    for relative, text in (case.get("extra_templates") or {}).items():
        (copy_dir / relative).write_text(text)

    lint = tools.lint(copy_dir)
    messages = [
        {
            "severity": SEVERITIES.get(message.get("Severity"), str(message.get("Severity"))),
            "path": message.get("Path"),
            "detail": message.get("Err") or None,
        }
        for message in lint.get("Messages") or []
        if (message.get("Severity") or 0) >= 2
    ]
    schema = json.loads((chart / "values.schema.json").read_text())
    validator = tools.jsonschema.Draft7Validator(schema)
    schema_errors = sorted(
        (
            {"path": ".".join(str(part) for part in error.absolute_path), "message": error.message}
            for error in validator.iter_errors(merged)
        ),
        key=lambda error: (error["path"], error["message"]),
    )

    manifests, render_error = render(tools, copy_dir)
    kube_versions = [oldest_kube_version(chart), tools.kube.latest_version()]
    kube_errors, unvalidated = validate_objects(tools, manifests, kube_versions)
    return {
        "name": case.get("name"),
        "values": case.get("values"),
        "lint": {"passed": not messages, "messages": messages},
        "schema_errors": schema_errors,
        "merged_values": merged,
        "manifests": manifests,
        "render_error": render_error,
        "kube_versions": kube_versions,
        "kube_errors": kube_errors,
        "kube_unvalidated": unvalidated,
    }


def load_yaml(tools: Tools, path: Path):
    try:
        return tools.yaml.safe_load(path.read_text())
    except tools.yaml.YAMLError as error:
        raise SystemExit(f"helm_chart.py: {path} is not YAML: {error}")


def merge(base, overlay):
    """Helm's coalescing of a values file over the chart's: tables merge, null removes, the rest replaces."""
    if not isinstance(base, dict) or not isinstance(overlay, dict):
        return copy.deepcopy(overlay)
    result = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def set_path(values, dotted: str, value) -> None:
    """Sets `a.b.0.c` (a number indexes a list); null removes the key, as in a values file."""
    *parents, last = [int(part) if part.isdigit() else part for part in dotted.split(".")]
    for part in parents:
        values = values[part] if isinstance(part, int) else values.setdefault(part, {})
    if value is None:
        values.pop(last, None)
    else:
        values[last] = value


def render(tools: Tools, chart: Path):
    """Every template file's rendering, through Helm's engine (see the module's doc)."""
    templates = sorted(
        path.relative_to(chart / "templates").as_posix()
        for path in (chart / "templates").rglob("*")
        if path.suffix in (".yaml", ".yml") and not path.name.startswith("_")
    )
    lines = [
        '{{- fail (printf "costd-render:%s:%s" '
        f'"{name}" (include (print $.Template.BasePath "/{name}") . | b64enc)) }}}}'
        for name in templates
    ]
    (chart / PROBE).write_text("\n".join(lines) + "\n")
    try:
        with captured_stderr() as log:
            tools.lint(chart)
        text = log()
    finally:
        (chart / PROBE).unlink()
    rendered = {name: base64.b64decode(payload).decode() for name, payload in MARKER.findall(text)}
    missing = [name for name in templates if name not in rendered]
    if missing:
        return [], f"Helm logged no rendering of {', '.join(missing)} (values invalid, or Helm no longer logs `fail` in lint mode)"
    manifests = []
    for name in templates:
        try:
            objects = [doc for doc in tools.yaml.safe_load_all(rendered[name]) if doc]
        except tools.yaml.YAMLError as error:
            return manifests, f"templates/{name} does not render to YAML: {error}"
        manifests.append({"template": f"templates/{name}", "text": rendered[name], "objects": objects})
    return manifests, None


@contextlib.contextmanager
def captured_stderr():
    """Helm's Go logger writes to file descriptor 2, below Python's sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        contents = {}
        try:
            yield lambda: contents["text"]
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            contents["text"] = sink.read().decode(errors="replace")


def oldest_kube_version(chart: Path) -> str:
    text = (chart / "Chart.yaml").read_text()
    found = re.search(r'^kubeVersion:\s*"?>=\s*v?(\d+\.\d+)', text, re.MULTILINE)
    if not found:
        raise SystemExit("helm_chart.py: Chart.yaml has no `kubeVersion: \">=X.Y\"` to validate against")
    return found.group(1)


def validate_objects(tools: Tools, manifests: list, versions: list):
    errors, unvalidated = [], []
    for manifest in manifests:
        for obj in manifest["objects"]:
            name = f'{obj.get("kind")}/{(obj.get("metadata") or {}).get("name")}'
            for version in versions:
                try:
                    tools.kube.validate(obj, version, strict=True)
                except tools.kube.ValidationError as error:
                    errors.append(
                        {
                            "template": manifest["template"],
                            "object": name,
                            "kube_version": version,
                            "path": ".".join(str(part) for part in error.absolute_path),
                            "message": error.message,
                        }
                    )
                except tools.kube.SchemaNotFoundError:
                    if name not in unvalidated:
                        unvalidated.append(name)
    return errors, unvalidated


if __name__ == "__main__":
    sys.exit(main())
