"""What a well-behaved command-line tool offers besides its measurements: `python -m`,
a licence that matches the package's metadata, exit codes, `info --require`, `list --json`,
shell completion, and "did you mean"."""
import json
import os
import subprocess
import sys

try:
    import tomllib
except ModuleNotFoundError:     # Python < 3.11
    tomllib = None

from harness import cli, error_line, invoke

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_python_dash_m_runs_the_command_line():
    done = subprocess.run([sys.executable, "-m", "wpcompare", "--version"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wpcompare, version ")
    listed = subprocess.run([sys.executable, "-m", "wpcompare", "list"], capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0 and "mmap" in listed.stdout


def _declared_license():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as stream:
        if tomllib is not None:
            return tomllib.load(stream)["project"]["license"]["text"]
        text = stream.read().decode()
    line = next(line for line in text.splitlines() if line.startswith("license"))
    return line.split('"')[1]


def test_license_file_is_the_licence_pyproject_declares():
    declared = _declared_license()
    with open(os.path.join(ROOT, "LICENSE")) as stream:
        text = stream.read()
    assert declared == "MIT", "this test knows the MIT text; teach it the new licence"
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the wpcompare developers" in text
    assert "Permission is hereby granted, free of charge" in text
