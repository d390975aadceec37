"""The one settings object: every knob is an environment variable (documented in README.md)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACESTACK_", extra="ignore")

    # Local state: Milvus Lite file, generated API key, audit log.
    data_dir: Path = REPO_ROOT / ".data"

    # Triton: where the gateway finds it, and how the local launcher runs it.
    triton_grpc_url: str = "127.0.0.1:8001"
    triton_http_port: int = 8010  # not 8000: that is the gateway's
    triton_grpc_port: int = 8001
    triton_metrics_port: int = 8002
    triton_log_verbose: int = 0
    triton_start_timeout_s: float = 120.0
    model_repository: Path = REPO_ROOT / "model_repository"
    model_config_name: str = ""  # "gpu" selects configs/gpu.pbtxt on GPU nodes


@lru_cache
def get_settings() -> Settings:
    return Settings()
