"""Generate the values table in helm/facestack/README.md from the `# --` comments in values.yaml.

    python helm/tools/values_table.py --write    # rewrite the table between the markers
    python helm/tools/values_table.py --check    # exit 1 if README.md is out of date (tests/helm runs this)

A key is documented by a `# -- description` comment on the line(s) right above it; its default is read from
the parsed values.yaml. Keys without such a comment (containers of documented keys) are left out.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[1] / "facestack"
START = "<!-- values-table:start -->"
END = "<!-- values-table:end -->"
KEY_RE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-/]+):(?:\s|$)")
DOC_RE = re.compile(r"^\s*# -- (?P<text>.*)$")
MAX_DEFAULT = 60


def documented_keys(text: str) -> list[tuple[str, str]]:
    """[(dotted.key, description)] in file order."""
    out: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        doc = DOC_RE.match(line)
        if doc:
            pending.append(doc.group("text").strip())
            continue
        if line.lstrip().startswith("#") and pending:
            pending.append(line.strip().lstrip("#").strip())
            continue
        match = KEY_RE.match(line)
        if not match or line.lstrip().startswith("- "):
            if line.strip() and not line.lstrip().startswith("#"):
                pending = []
            continue
        indent = len(match.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group("key")))
        if pending:
            out.append((".".join(k for _, k in stack), " ".join(pending)))
            pending = []
    return out


def default_of(values: dict, dotted: str):
    node = values
    for part in dotted.split("."):
        node = node[part]
    return node


def render_default(value) -> str:
    text = json.dumps(value, separators=(", ", ": "))
    if len(text) > MAX_DEFAULT:
        return "see values.yaml"
    return f"`{text}`"


def type_name(value) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}.get(
        type(value), "null")


def table(values_path: Path = CHART / "values.yaml") -> str:
    text = values_path.read_text()
    values = yaml.safe_load(text)
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for key, desc in documented_keys(text):
        value = default_of(values, key)
        desc = desc.replace("|", "\\|")
        rows.append(f"| `{key}` | {type_name(value)} | {render_default(value)} | {desc} |")
    return "\n".join(rows)


def updated_readme(readme: str, values_path: Path = CHART / "values.yaml") -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table(values_path)}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    new = updated_readme(readme)
    if args.check:
        if new != readme:
            print("helm/facestack/README.md values table is stale: python helm/tools/values_table.py --write",
                  file=sys.stderr)
            return 1
        return 0
    readme_path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
