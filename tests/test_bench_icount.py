"""bench/icount.py (issue 21's cost, counted by callgrind): the loop it runs under valgrind
drives the whole app and gets 200s in every mode (a run that answered errors would count
the cost of an error); its report combines the modes into the 10% figure. valgrind itself
is not run here: a run takes about 90 s (bench.icount is run by hand)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import icount

SCRIPT = Path(icount.__file__).resolve()


@pytest.mark.parametrize("mode", list(icount.MODES))
def test_the_counted_loop_answers_every_request_in_each_mode(mode: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    ratio = icount.MODES[mode]
    if ratio is not None:
        # Nothing listens there: the batch processor's export fails and is logged; the
        # requests do not depend on it.
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"
        env["OTEL_EXPORTER_OTLP_TIMEOUT"] = "1"
        env["OTEL_TRACES_SAMPLER_ARG"] = ratio
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--child", mode, "3", "--query", "{ __typename }"],
        cwd=icount.REPO,
        env={**env, "PYTHONPATH": str(icount.REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_query_the_app_refuses_fails_the_run() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--child", "off", "1", "--query", "{ nope }"],
        cwd=icount.REPO,
        env={**env, "PYTHONPATH": str(icount.REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "requests answered with an error" in done.stderr


def test_the_report_weighs_the_modes_at_ten_percent() -> None:
    args = argparse.Namespace(query="{ __typename }", fast_paths="on", requests=1000, rev=None)
    table = icount.report({"off": 400_000, "unsampled": 410_000, "sampled": 600_000}, args)
    assert "| tracing off | 400.0k | 1.000 |" in table
    assert "| on, unsampled (ratio 0) | 410.0k | 1.025 |" in table
    assert "| on, sampled (ratio 1) | 600.0k | 1.500 |" in table
    # 0.9 x 410k + 0.1 x 600k = 429k
    assert "| on at 10%: 0.9 x unsampled + 0.1 x sampled | 429.0k | 1.073 |" in table
