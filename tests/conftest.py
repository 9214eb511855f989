"""Shared test setup: quiet TensorFlow, the reference fixtures."""

import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    if not (FIXTURES / "fixtures.json").exists():
        pytest.fail(f"Reference fixtures not found at {FIXTURES} (expected ../shared beside the repo).")
    return FIXTURES


@pytest.fixture(scope="session")
def fixture_specs(fixtures_dir) -> dict:
    return json.loads((fixtures_dir / "fixtures.json").read_text())["fixtures"]
