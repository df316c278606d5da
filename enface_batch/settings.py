"""Settings, read from the environment (prefix ``ENFACE_``) or a ``.env`` file.

One place for every knob so that errors can name the variable that fixes them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from platformdirs import user_cache_dir
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_test_data() -> Path:
    """../shared/data beside the checkout (or beside the current directory)."""
    for base in (Path(__file__).resolve().parents[1], Path.cwd()):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return Path.cwd().parent / "shared" / "data"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENFACE_", env_file=".env", extra="ignore")

    model_cache: Path = Field(
        default_factory=lambda: Path(user_cache_dir("enface-batch")) / "models",
        description="Where fetched and converted model files live (ENFACE_MODEL_CACHE).",
    )
    model_pack: str = Field(
        default="embedded",
        description="'embedded' (registry models) or a path to an insightface pack directory (ENFACE_MODEL_PACK).",
    )
    offline: bool = Field(
        default=False, description="Never call a registry; use only ENFACE_MODEL_CACHE (ENFACE_OFFLINE)."
    )
    providers: str = Field(
        default="auto",
        description="onnxruntime providers: 'auto', 'cpu', 'cuda' or a comma list (ENFACE_PROVIDERS).",
    )
    threads: int = Field(default=0, description="onnxruntime intra-op threads, 0 = one per core (ENFACE_THREADS).")
    batch_size: int = Field(default=8, ge=1, description="Faces per embedder/attribute batch (ENFACE_BATCH_SIZE).")
    det_batch: int = Field(
        default=8,
        ge=1,
        description="Photos of one size per detector run (ENFACE_DET_BATCH); results do not depend on it.",
    )
    det_max_side: int = Field(
        default=640, ge=160, description="Longest side, in pixels, the detector sees (ENFACE_DET_MAX_SIDE)."
    )
    decode_max_side: int = Field(
        default=2048,
        ge=320,
        description="Large JPEGs are decoded at reduced size down to this longest side (ENFACE_DECODE_MAX_SIDE).",
    )
    det_threshold: float = Field(default=0.6, ge=0.05, le=0.99, description="Detector score threshold.")
    det_mode: Literal["fast", "thorough"] = Field(
        default="fast",
        description="'fast': YuNet once at ENFACE_DET_MAX_SIDE. 'thorough': also YuNet on the mirror image and "
        "RetinaFace on a padded copy, boxes fused; finds more turned and border-cut faces at 3-5x the detector "
        "time (bench/detection_eval.py). Embedded pack only (ENFACE_DET_MODE).",
    )
    max_image_pixels: int = Field(
        default=200_000_000, description="Decompression-bomb limit in pixels (ENFACE_MAX_IMAGE_PIXELS)."
    )
    max_file_bytes: int = Field(
        default=200 * 1024 * 1024, description="Files larger than this are refused (ENFACE_MAX_FILE_BYTES)."
    )
    enrol_min_det_score: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="Faces the detector scores lower cannot create persons (ENFACE_ENROL_MIN_DET_SCORE; 0 = off).",
    )
    enrol_max_outside: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Faces whose aligned crop lies more than this share outside the photo cannot create persons "
        "(ENFACE_ENROL_MAX_OUTSIDE; 1 = off).",
    )
    max_decode_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024 * 1024,
        description="Decode budget: width x height x bytes per pixel of the decoded image, read from its header "
        "before any pixels are allocated; larger images are refused as too_large (ENFACE_MAX_DECODE_BYTES).",
    )
    read_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A file read (or hash) that takes longer is abandoned as a storage error and retried by the "
        "next run (ENFACE_READ_TIMEOUT_SECONDS).",
    )
    s3_retries: int = Field(default=5, ge=1, description="botocore attempts of each S3 request (ENFACE_S3_RETRIES).")
    lock_ttl_seconds: float = Field(
        default=120.0,
        ge=5,
        description="The lake's writer lock is stale when its holder has not renewed it for this long; holders "
        "renew it every third of it (ENFACE_LOCK_TTL_SECONDS).",
    )
    optimize_every: int = Field(
        default=7,
        ge=0,
        description="The scan flow compacts and vacuums the lake (enface lake optimize, vacuum) after every N-th "
        "scan (ENFACE_OPTIMIZE_EVERY; 0 = never, 7 = weekly for nightly scans).",
    )
    lake: str = Field(
        default="enface-lake",
        description="Where the tables live: a folder or a URI such as s3://bucket/prefix (ENFACE_LAKE).",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3-compatible endpoint for s3:// lakes and archives, e.g. MinIO (ENFACE_S3_ENDPOINT_URL; "
        "AWS_ENDPOINT_URL is also honoured).",
    )
    jwt_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs the endpoint's JWT temporary tokens; required by `enface serve`, at least 32 "
        "characters, never committed (ENFACE_JWT_SECRET).",
    )
    api_max_request_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        description="Largest upload the endpoint accepts in one request, images together (ENFACE_API_MAX_REQUEST_BYTES;"
        " the seed's 10 MB).",
    )
    api_max_request_pixel_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=1024 * 1024,
        description="Decoded pixels (width x height x bytes per pixel, read from the image headers) the images of "
        "one endpoint request may add up to; more is a 400 before any is decoded (ENFACE_API_MAX_REQUEST_PIXEL_BYTES).",
    )
    api_model_slots: int = Field(
        default=2,
        ge=1,
        description="Image analyses the endpoint runs at once; more requests queue (ENFACE_API_MODEL_SLOTS). "
        "onnxruntime already uses every core for one; 2 overlaps decoding with inference (bench/api_load.py).",
    )
    test_data: Path = Field(
        default_factory=lambda: _default_test_data(),
        description="Real labelled face data for tests and benchmarks (ENFACE_TEST_DATA).",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
