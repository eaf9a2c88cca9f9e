"""datacomp.runtime: the allocator setting the CLI applies on start."""

import os
import platform
import subprocess
import sys

import pytest

CODE = "from datacomp.runtime import keep_freed_memory as k; print(k(), k())"


def _run(env_extra: dict) -> str:
    env = {**os.environ, **env_extra}
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, check=True)
    return done.stdout.strip()


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_applies_once_on_glibc() -> None:
    assert _run({"DATACOMP_MALLOC": ""}) == "True True"


def test_opt_out_keeps_glibc_default() -> None:
    assert _run({"DATACOMP_MALLOC": "default"}) == "False False"


def test_native_bf16_is_false_off_cpu_and_cuda() -> None:
    from datacomp.runtime import native_bf16

    assert native_bf16("meta") is False
    assert isinstance(native_bf16("cpu"), bool)
