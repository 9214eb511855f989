"""Shared test setup: quiet TensorFlow, the reference fixtures."""

import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# The tests compile hundreds of small XLA programs (TensorFlow's jit_compile, every JAX step and eager JAX op), each
# run a few times: LLVM's optimisations cost more than they save there (the JAX core tests took 30 s with them, 18
# without). Set before TensorFlow or JAX starts, and inherited by the processes the tests start.
FAST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = " ".join(filter(None, [FAST_XLA_FLAGS, os.environ.get("XLA_FLAGS", "")]))

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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--all_tiers", action="store_true",
                     help="run the second tier too: tests marked `process` (processes, servers, workers, studies, "
                          "packaging, the docs) and `large` (whole-size variants); the default runs the unit tier")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips the second tier unless --all_tiers is given or `-m` chooses the tests itself (`-m "process or large"`)."""
    if config.getoption("--all_tiers") or config.getoption("markexpr"):
        return
    skip = pytest.mark.skip(reason="second tier: run with --all_tiers, or alone with -m 'process or large'")
    for item in items:
        if "process" in item.keywords or "large" in item.keywords:
            item.add_marker(skip)
