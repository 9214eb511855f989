"""The documentation cannot drift from the code: every fenced block marked `python runnable` runs."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from support import REPO, env

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


@pytest.mark.parametrize("name, code", runnable_blocks(), ids=[name for name, _ in runnable_blocks()])
def test_runnable_blocks_run(name, code, tmp_path):
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"{name} failed:\n{result.stderr[-3000:]}"
