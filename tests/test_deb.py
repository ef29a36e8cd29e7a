"""The Debian package: scripts/build-deb builds it, dpkg installs it on this machine, purge removes it.

It runs as root on a machine that has no horizond package yet, and leaves it as it was (the
horizon user too, which the package itself keeps on purge, as Debian policy advises). The
install must start nothing: no horizond runs, so nothing touches a Redis on this host.
$HORIZOND_DEB names a .deb built earlier (by scripts/build-deb) to test instead of building one.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

import psutil
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # building the venv from PyPI takes ~20 s, installing ~5 s
WANTS = Path("/etc/systemd/system/multi-user.target.wants/horizond.service")


def run(*args, **options) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "HORIZOND_CONFIG",
                                                             "HORIZOND_SOCKET", "REDIS_URL")}
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"  # the installed entry points, not a venv's
    return subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=300, **options)


def installed() -> bool:
    result = run("dpkg-query", "-W", "-f=${Status}", "horizond")
    return result.returncode == 0 and "installed" in result.stdout.split()


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture(scope="session")
def deb(tmp_path_factory) -> Path:
    if os.environ.get("HORIZOND_DEB"):
        return Path(os.environ["HORIZOND_DEB"])
    out = tmp_path_factory.mktemp("deb")
    result = run(str(ROOT / "scripts/build-deb"), str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])


def horizond_processes() -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "/opt/horizond" in cmdline or cmdline.startswith("/usr/bin/horizond"):
            found.append(cmdline)
    return found


def test_the_package_installs_checks_its_config_and_purges_without_a_trace(deb):
    if os.geteuid() != 0:
        pytest.skip("installing a package needs root")
    for tool in ("dpkg", "dpkg-deb", "deb-systemd-helper", "systemd-sysusers"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed here (Debian packages dpkg, init-system-helpers, systemd)")
    if installed() or Path("/opt/horizond").exists():
        pytest.skip("horizond is already installed on this machine: the test will not replace it")
    user_was_there = user_exists("horizon")
    if shutil.which("lintian"):
        lint = run("lintian", "--allow-root", "--fail-on", "error,warning", str(deb))
        assert lint.returncode == 0, lint.stdout + lint.stderr
    try:
        result = run("dpkg", "-i", str(deb))
        assert result.returncode == 0, result.stdout + result.stderr
        # installed and enabled the Debian way, but not started, not even at the next boot
        assert WANTS.is_symlink() and Path("/etc/horizond/unconfigured").exists()
        assert "ConditionPathExists=!/etc/horizond/unconfigured" in Path(
            "/lib/systemd/system/horizond.service").read_text()
        assert horizond_processes() == []
        assert "/etc/horizond/horizond.toml" in run("dpkg-query", "-W", "-f=${Conffiles}", "horizond").stdout
        config = os.stat("/etc/horizond/horizond.toml")
        assert oct(config.st_mode & 0o777) == "0o640" and config.st_gid == pwd.getpwnam("horizon").pw_gid
        assert Path("/run/horizond").is_dir() and os.stat("/run/horizond").st_uid == pwd.getpwnam("horizon").pw_uid

        check = run("horizond", "--check-config")  # the shipped config, as root...
        assert check.returncode == 0 and "/etc/horizond/horizond.toml: OK" in check.stdout, check.stderr
        as_horizon = run("setpriv", "--reuid=horizon", "--regid=horizon", "--init-groups", "horizond",
                         "--check-config")  # ...and as the daemon's user, who may read it
        assert as_horizon.returncode == 0 and ": OK:" in as_horizon.stdout, as_horizon.stderr
        helped = run("horizonctl", "--help")
        assert helped.returncode == 0 and "reload" in helped.stdout
        if shutil.which("man"):
            assert run("man", "-w", "horizond", "horizonctl", "horizond.toml").returncode == 0
        if shutil.which("systemd-analyze"):
            rated = run("systemd-analyze", "security", "--offline=true", "/lib/systemd/system/horizond.service")
            found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", rated.stdout + rated.stderr)
            assert found and float(found[1]) <= 2.5, rated.stdout + rated.stderr
        assert horizond_processes() == []
    finally:
        purged = run("dpkg", "--purge", "horizond")
        if not user_was_there and user_exists("horizon"):
            run("userdel", "horizon")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not installed()
    for path in ("/opt/horizond", "/etc/horizond", "/run/horizond", "/lib/systemd/system/horizond.service",
                 "/usr/bin/horizond"):
        assert not os.path.lexists(path), path
    assert not WANTS.is_symlink()
    assert user_exists("horizon") == user_was_there
