"""The benchmark's own venv for the references that are not project dependencies (dlt, pandas, DuckDB, polars).

Built once under `benchmarks/.venv-dlt` (git-ignored) with `python -m venv` and pip, from the
pinned `benchmarks/requirements-ref.txt`; rebuilt when that file changes (its hash is stamped).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-dlt"
REQUIREMENTS = HERE / "requirements-ref.txt"


def _stamp() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def ref_python(log: Path) -> Path:
    """The venv's python, after building or updating the venv if needed (pip output goes to `log`)."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    if python.exists() and stamp.exists() and stamp.read_text() == _stamp():
        return python
    print(f"building {VENV.relative_to(HERE.parent)} (dlt, pandas, DuckDB, polars; about a minute) ...", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        if not python.exists():
            # The base interpreter, not the project venv's: a venv made from a venv can see neither's packages.
            base = Path(sys.base_prefix) / "bin" / "python3"
            subprocess.run([base, "-m", "venv", VENV], check=True, stdout=out, stderr=subprocess.STDOUT)
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "-r", REQUIREMENTS],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    stamp.write_text(_stamp())
    return python
