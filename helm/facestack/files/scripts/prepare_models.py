"""Prepare a copied Triton model repository: apply version policies and check what Triton will load.

Runs in the Triton pod's init container (the Triton image has tritonclient's protobuf classes):

    python prepare_models.py --repository /models --config-name gpu --version-policy '{"face_embedder": ...}'

The version policy of each named model is written into the config Triton will read (`configs/<name>.pbtxt`
when --config-name is given and that file exists, else `config.pbtxt`), replacing any policy already there.
Policies use the protobuf JSON form of ModelVersionPolicy: {"latest": {"num_versions": 1}},
{"specific": {"versions": [1, 2]}} or {"all": {}}. Every version a `specific` policy names must exist as a
directory, or the pod fails here with a clear message instead of Triton failing to load the model later.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2


class PrepareError(RuntimeError):
    pass


def config_path(model_dir: Path, config_name: str) -> Path:
    if config_name:
        alt = model_dir / "configs" / f"{config_name}.pbtxt"
        if alt.is_file():
            return alt
    return model_dir / "config.pbtxt"


def version_dirs(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def apply_policy(repository: Path, model: str, policy: dict, config_name: str) -> Path:
    model_dir = repository / model
    if not model_dir.is_dir():
        raise PrepareError(f"version policy for {model!r}, but {model_dir} does not exist")
    path = config_path(model_dir, config_name)
    if not path.is_file():
        raise PrepareError(f"{model}: no config at {path}")
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    try:
        parsed = json_format.ParseDict(policy, model_config_pb2.ModelVersionPolicy())
    except json_format.ParseError as exc:
        raise PrepareError(f"{model}: bad version policy {policy!r}: {exc}") from exc
    if parsed.WhichOneof("policy_choice") is None:
        raise PrepareError(f"{model}: version policy {policy!r} names no policy (latest, specific or all)")
    present = version_dirs(model_dir)
    missing = sorted(set(parsed.specific.versions) - set(present))
    if missing:
        raise PrepareError(f"{model}: policy names versions {missing} but the repository has {present}")
    if not present:
        raise PrepareError(f"{model}: no version directories in {model_dir}")
    config.version_policy.CopyFrom(parsed)
    path.write_text(text_format.MessageToString(config))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--config-name", default="")
    parser.add_argument("--version-policy", default="{}", help="JSON object: model name -> ModelVersionPolicy")
    args = parser.parse_args(argv)
    try:
        policies = json.loads(args.version_policy)
        if not isinstance(policies, dict):
            raise PrepareError("--version-policy must be a JSON object")
        if not args.repository.is_dir() or not any(args.repository.iterdir()):
            raise PrepareError(f"model repository {args.repository} is missing or empty")
        for model, policy in sorted(policies.items()):
            path = apply_policy(args.repository, model, policy, args.config_name)
            print(f"{model}: version policy {json.dumps(policy, sort_keys=True)} -> {path}")
    except (PrepareError, json.JSONDecodeError, text_format.ParseError) as exc:
        print(f"prepare_models: error: {exc}", file=sys.stderr)
        return 1
    for model_dir in sorted(p for p in args.repository.iterdir() if p.is_dir()):
        config = config_path(model_dir, args.config_name)
        print(f"{model_dir.name}: versions {version_dirs(model_dir)}, config {config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
