"""The one settings object: every knob is an environment variable (documented in README.md)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from facestack import REPO_ROOT

PadPolicy = Literal["off", "report", "enforce"]


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

    # --- Gateway (docs/gateway.md). Names fixed by the Helm chart: PORT, MILVUS_URI, MILVUS_TOKEN. ---
    port: int = Field(8000, validation_alias=AliasChoices("PORT", "port"))
    # "" = Milvus Lite under data_dir; or a server URI such as http://milvus:19530
    milvus_uri: str = Field("", validation_alias=AliasChoices("MILVUS_URI", "milvus_uri"))
    milvus_token: SecretStr = Field(SecretStr(""), validation_alias=AliasChoices("MILVUS_TOKEN", "milvus_token"))
    # Bounded-consistency staleness of the Milvus server (its common.gracefulTime, default 5000 ms): an erasure
    # receipt waits this long so that no replica's read returns the erased data (docs/gateway.md)
    milvus_bounded_staleness_s: float = 5.0
    # Vector index of new template collections: FLAT (exact; measured p99 40-46 ms at 1M templates, 2 cores) or HNSW
    # (approximate, for far larger galleries per query node; recall below 0.99 on SFace templates)
    milvus_index: Literal["FLAT", "HNSW"] = "FLAT"
    api_key: SecretStr | None = None  # FACESTACK_API_KEY: an all-scopes key for tenant "default"
    api_keys_file: Path | None = None  # JSON of hashed keys (a mounted Secret)
    log_level: str = "info"
    audit_log: str = ""  # "" = <data_dir>/audit.jsonl; "-" = stdout
    gateway_max_image_bytes: int = 10 * 1024 * 1024
    gateway_max_image_pixels: int = 40_000_000  # at most Triton's own limit (face_pipeline max_pixels)
    gateway_max_images_per_request: int = 16  # bulk enrolment
    gateway_max_body_bytes: int = 65536  # request body of the routes without images (galleries, subjects: JSON)
    gateway_rate_limit_rps: float = 100.0  # per API key and gateway process (token bucket); 0 = off
    gateway_rate_limit_burst: int = 200  # requests a key may send at once before the rate applies
    gateway_triton_concurrency: int = 8  # calls in flight to Triton per gateway process
    gateway_triton_queue: int = 64  # calls waiting for a slot; beyond it: 429
    gateway_triton_timeout_s: float = 10.0
    gateway_triton_channel_max_age_s: float = 60.0  # new gRPC channel (fresh DNS: new Triton pods); 0 = never
    gateway_milvus_timeout_s: float = 5.0
    gateway_milvus_workers: int = 8  # threads for the (blocking) pymilvus client
    gateway_retry_after_s: int = 1  # Retry-After on 429
    gateway_backend_retry_after_s: int = 5  # Retry-After on 503
    gateway_default_embedder: str = "sface"
    gateway_min_face_size: int = 40  # pixels, shorter box side; smaller faces are face_too_small
    gateway_min_sharpness: float = 15.0  # variance of Laplacian of the aligned crop (blur radius 10: ~9)
    gateway_max_pose_deg: float = 50.0  # |yaw| and |pitch| above it are low_quality
    gateway_brightness_range: tuple[float, float] = (25.0, 235.0)
    gateway_max_faces_per_subject: int = 32
    gateway_shutdown_timeout_s: float = 30.0
    gateway_host: str = "0.0.0.0"  # `python -m gateway` (containers); `make run` always binds 127.0.0.1
    gateway_keys_reload_s: float = 2.0  # the keys file is re-read this often when it changed; 0 = never
    gateway_milvus_queue: int = 32  # Milvus calls waiting for one of the workers; beyond it: 503 + Retry-After
    gateway_idempotency_ttl_s: int = 86400  # how long an Idempotency-Key's answer is kept and replayed
    # Liveness (docs/liveness.md). A challenge's frames must arrive within the deadline; a passed challenge can
    # bind one verify within the result TTL. Pose thresholds: the change from the first frame that counts as
    # a turn / a look up or down; pitch is judged only where the actions include look_up/look_down. The pose is
    # the face mesh's (exported by `make models`) where the pipeline returns it, else YuNet's five landmarks'.
    # Measured on LFW against an independent reference pose (`python -m benchmarks.liveness`, docs/liveness.md):
    # with the mesh, turns only (left-right, right-left, left-right-left, right-left-right) at yaw 8 (the
    # DevTrain fit) passes 97.0 % of DevTest genuine attempts and no replay or print; with look up/down 66-69 %,
    # below the bar, so the default actions are the two turns. Five landmarks (the fallback) measure yaw well
    # (r 0.94) and pitch not at all.
    gateway_liveness_deadline_s: float = 60.0
    gateway_liveness_result_ttl_s: float = 300.0
    gateway_liveness_yaw_deg: float = 15.0
    gateway_liveness_pitch_deg: float = 10.0
    gateway_liveness_mesh_yaw_deg: float = 8.0
    gateway_liveness_mesh_pitch_deg: float = 6.0
    # the actions a challenge draws from (2 or 3 steps, none the same as the one before); at least two
    gateway_liveness_actions: list[Literal["turn_left", "turn_right", "look_up", "look_down"]] = [
        "turn_left", "turn_right"]
    # same person across frames: cosine to the first frame at least this 1:1 operating point's threshold
    gateway_liveness_identity_point: str = "fmr_1e-3"
    # Presentation-attack detection (the optional `face_pad` model): off | report | enforce, for every tenant
    # unless the JSON map names the tenant's own; a bona-fide score below the threshold fails under enforce.
    gateway_pad_policy: PadPolicy = "off"
    gateway_pad_policy_by_tenant: dict[str, PadPolicy] = {}
    gateway_pad_threshold: float = 0.5


# The embedders' calibrated operating points (written by `python -m facestack.accuracy --calibrate`): package
# data of facestack, so the gateway finds them without export/ or a model repository.
THRESHOLDS_FILE = Path(__file__).with_name("thresholds.json")


@lru_cache
def get_settings() -> Settings:
    return Settings()
