"""The documentation cannot drift from the code: every fenced block marked `python runnable` runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from support import REPO, env, free_port

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"^( *)```python runnable\n(.*?)^\1```", re.M | re.S)


def runnable_blocks() -> list[tuple[str, str]]:
    blocks = []
    for page in PAGES:
        for number, match in enumerate(BLOCK.finditer(page.read_text()), 1):
            indent = len(match.group(1))
            code = "\n".join(line[indent:] for line in match.group(2).splitlines())
            blocks.append((f"{page.relative_to(REPO)}#{number}", code))
    return blocks


def test_the_readme_is_a_front_door():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 220
    first_python = next(i for i, line in enumerate(readme.splitlines()) if line.startswith("```python"))
    assert first_python < 40
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (REPO / link).exists(), link


#: Runs each block given on the command line in a namespace and a folder of its own; names the first that fails.
DRIVER = """
import os, sys, tempfile, traceback
for name, code in zip(sys.argv[1::2], sys.argv[2::2]):
    os.chdir(tempfile.mkdtemp())
    try:
        exec(compile(code, name, "exec"), {"__name__": "__main__"})
    except BaseException:
        print(f"FAILED {name}", file=sys.stderr)
        traceback.print_exc()
        raise SystemExit(1)
    print(f"ran {name}")
"""


@pytest.mark.process
def test_runnable_blocks_run():
    """Every block, in one process (TensorFlow starts once), each in a fresh namespace and folder."""
    blocks = runnable_blocks()
    assert len(blocks) >= 5
    result = subprocess.run([sys.executable, "-c", DRIVER, *[part for block in blocks for part in block]], cwd=REPO,
                            env=env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("ran ") == len(blocks)


@pytest.mark.process
def test_the_readme_demo_runs_end_to_end(tmp_path):
    """The README's main job, as a user runs it (fewer epochs): train, export, serve, query over REST and gRPC, draw."""
    ports = [str(free_port()), str(free_port())]
    result = subprocess.run(
        [sys.executable, "-m", "keras_vit.serving.demo", "--epochs", "2", "--output_dir", str(tmp_path / "run"),
         "--model_base_path", str(tmp_path / "models"), "--port", ports[0], "--rest_api_port", ports[1]],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout[result.stdout.index("{\n"):result.stdout.index("\n}\n") + 2])
    assert report["examples"] == 360 and report["grpc_matches_rest"] and report["server_exit_code"] == 0
    assert report["rest_correct"] == round(report["in_process_accuracy"] * 360)
    assert "equal" in result.stdout.splitlines()[-2]
    assert (tmp_path / "run" / "report" / "index.html").is_file()
