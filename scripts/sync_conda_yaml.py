"""Regenerate conda.yaml from requirements.lock so the two carry the same exact pins."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = """\
# Generated from requirements.lock by `make conda.yaml`; tests/test_project_files.py checks they agree.
# Dependencies live under pip: so that --env-manager virtualenv and uv can convert this file.
name: pystock-training
channels:
  - conda-forge
dependencies:
  - python=3.11.7
  - pip
  - pip:
"""


def main() -> None:
    """Write conda.yaml next to requirements.lock."""
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    pins = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    body = "".join(f"      - {pin}\n" for pin in pins)
    (ROOT / "conda.yaml").write_text(HEADER + body)


if __name__ == "__main__":
    main()
