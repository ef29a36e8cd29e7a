"""Man pages and shell completion come from the parsers (scripts/gendocs.py): they name everything there is."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, child_env
from horizond.control.ctl import build_parser
from horizond.core.config import _TABLES

sys.path.insert(0, str(ROOT / "scripts"))
import gendocs  # noqa: E402

SUPS = '[supervisors.alpha]\nqueues = ["qa"]\n[supervisors.beta]\nqueues = ["qb"]\n'


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    subprocess.run([sys.executable, str(ROOT / "scripts/gendocs.py"), str(out)], check=True)
    return out


def plain(roff: str) -> str:
    return roff.replace("\\-", "-").replace("\\fB", "").replace("\\fR", "").replace("\\fI", "")


def test_the_horizonctl_page_names_every_subcommand_and_option(docs):
    page = plain((docs / "man/horizonctl.8").read_text())
    for name, (_, sub) in gendocs.subcommands(build_parser()).items():
        assert f".TP\n{name}" in page, f"horizonctl.8 does not describe {name}"
        for action in gendocs.options(sub):
            assert action.option_strings[0] in page.split(f".TP\n{name}", 1)[1], (name, action.option_strings)


def test_the_horizond_pages_name_its_options_the_web_command_and_every_config_key(docs):
    page = plain((docs / "man/horizond.8").read_text())
    for option in ("--config", "--check-config", "--log-format", "--log-level", "--version"):
        assert option in page
    assert ".TP\nweb" in page
    config = plain((docs / "man/horizond.toml.5").read_text())
    for table, keys in _TABLES.items():
        assert f"[{table}]" in config
        section = config.split(f"[{table}]", 1)[1].split(".TP", 1)[0]
        assert all(key in section for key in keys), (table, keys)


def test_the_pages_render_without_warnings(docs):
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed (Debian package groff-base)")
    for page in (docs / "man").iterdir():
        result = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8", str(page)], capture_output=True, text=True)
        assert result.returncode == 0 and not result.stderr, (page.name, result.stderr)


def complete(docs, line: str, env=None) -> list[str]:
    """What bash offers for `line` (the cursor at its end), through the generated completion."""
    words = line.split(" ")
    script = (f"source {docs / 'completion/horizonctl'}\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\n"
              f"COMP_CWORD={len(words) - 1}\n_horizonctl\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    result = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    return sorted(w for w in result.stdout.splitlines() if w)


def test_bash_completes_subcommands_their_options_and_choices(docs):
    assert complete(docs, "horizonctl ") == sorted(["--socket", "--config", "-c",
                                                    *gendocs.subcommands(build_parser())])
    assert complete(docs, "horizonctl bre") == ["breaker", "breakers"]
    assert complete(docs, "horizonctl -c /etc/horizond/horizond.toml breaker ") == ["close", "open"]
    assert complete(docs, "horizonctl failed --") == ["--json", "--limit", "--queue"]
    assert complete(docs, "horizonctl failed --queue ") == []  # a value: no option offered
    assert complete(docs, "horizonctl batch show ") == ["--json"]  # past the choices


def test_bash_completes_supervisor_names_from_the_running_daemon(docs, start_daemon, tmp_path):
    daemon = start_daemon(SUPS)
    daemon.wait_ready({"alpha": 1, "beta": 1})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "horizonctl"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m horizond.control.ctl "$@"\n')
    wrapper.chmod(0o755)
    env = child_env(PATH=f"{bin_dir}:/usr/bin:/bin")
    assert complete(docs, f"horizonctl --socket {daemon.socket} workers ", env) == ["--json", "alpha", "beta"]
    assert complete(docs, f"horizonctl --socket {daemon.socket} scale a", env) == ["alpha"]
    # no daemon there: no names, no error
    assert complete(docs, f"horizonctl --socket {tmp_path}/none.sock pause ", env) == ["--fleet"]


def test_the_zsh_completion_is_valid_zsh(docs):
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed here: only its bash sibling is exercised")
    result = subprocess.run(["zsh", "-n", str(docs / "completion/_horizonctl")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
