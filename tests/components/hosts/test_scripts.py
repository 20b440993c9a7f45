"""The host scripts run for real inside a Debian bookworm chroot, the way the program runs them on a
host (`bash -c <script text> <name> ARG...`, reset environment, root). The commands that would change
a real machine or need a GPU (apt-get, dpkg-query, curl, gpg, nvidia-smi, nvidia-ctk, docker,
systemctl, ufw, nft, findmnt, hf) are stubs first on PATH that log every call, so each test asserts
both what a script printed and what it did."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stacks.inventory import parse_inventory
from tests.support.rootfs import debian_rootfs, fresh_root, install_scripts, run_script
from tests.support.tools import require_tool

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = sorted((REPO / "components/hosts/scripts").glob("*.sh"))
FIXTURES = REPO / "tests/fixtures/nvidia-smi"
QUERY = "index,uuid,name,memory.total,driver_version,compute_cap,mig.mode.current"
VERSION = "1.17.8-1"
TOOLKIT_PACKAGES = ("nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools")
KEYRING = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
APT_LIST = "/etc/apt/sources.list.d/nvidia-container-toolkit.list"
REVISION = "31b70e2e869a7173562077fd711b654946d38674"
TOKEN = "hf_SeCrEtT0kenThatMustNotLeak"

# Every stub starts by logging its argv: NUL-separated fields, each call closed by RS NUL.
PRELUDE = r"""#!/bin/bash
{ printf '%s\0' "${0##*/}" "$@"; printf '\036\0'; } >>/stub-log/calls
"""

STUBS = {
    "nvidia-smi": r"""
if [ -e /stub-state/nvidia-smi-fail ]; then
  echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." \
    "Make sure that the latest NVIDIA driver is installed and running."
  exit 9
fi
case "$*" in
  -L) cat /fixtures/nvidia-smi-L.txt ;;
  "--query-gpu=index,uuid,name,memory.total,driver_version,compute_cap,mig.mode.current --format=csv,noheader,nounits")
    # The captured CSV has no mig.mode.current column: append the value the same host reported
    # (Disabled, in its query-gpu.csv) to print the 7-column lines this query asks for.
    sed 's/$/, Disabled/' /fixtures/query-gpu-noheader.csv ;;
  *) echo "stub nvidia-smi: unexpected arguments: $*" >&2; exit 2 ;;
esac
""",
    # Like the real tool: adds the nvidia runtime, creating the file if absent, and rewrites the
    # whole file in its own layout (tabs, sorted keys), which differs from runtime.sh's.
    "nvidia-ctk": r"""
[ "$*" = "runtime configure --runtime=docker" ] || { echo "stub nvidia-ctk: unexpected: $*" >&2; exit 2; }
exec python3 - <<'PY'
import json, os
path = "/etc/docker/daemon.json"
config = {}
if os.path.exists(path):
    with open(path) as f:
        text = f.read()
    config = json.loads(text) if text.strip() else {}
config.setdefault("runtimes", {})["nvidia"] = {"args": [], "path": "nvidia-container-runtime"}
os.makedirs("/etc/docker", exist_ok=True)
with open(path, "w") as f:
    json.dump(config, f, indent="\t", sort_keys=True)
print("INFO[0000] Wrote updated config to /etc/docker/daemon.json")
PY
""",
    "systemctl": r"""
[ -e /stub-state/systemctl-fail ] && { echo "Job for docker.service failed." >&2; exit 1; }
exit 0
""",
    # `run` executes the container's command right here, as the container would (the stub
    # nvidia-smi and this root's /dev stand in for what the NVIDIA hook injects).
    "docker": r"""
case $1 in
  run)
    if [ -e /stub-state/docker-run-fail ]; then
      echo 'docker: Error response from daemon: could not select device driver "" with capabilities: [[gpu]].' >&2
      exit 125
    fi
    shift
    while [ $# -gt 0 ]; do
      case $1 in --rm) shift ;; --gpus) shift 2 ;; *) break ;; esac
    done
    shift
    exec "$@" ;;
  image)
    if [ "$2" = inspect ] && grep -qxF -- "$3" /stub-state/docker-images 2>/dev/null; then echo '[{}]'; exit 0; fi
    echo "Error: No such image: $3" >&2; exit 1 ;;
  pull)
    if grep -qxF -- "$2" /stub-state/docker-pull-fail 2>/dev/null; then
      echo "Error response from daemon: manifest for $2 not found: manifest unknown" >&2; exit 1
    fi
    echo "$2: Pulled"; echo "$2" >>/stub-state/docker-images ;;
  *) echo "stub docker: unexpected: $*" >&2; exit 2 ;;
esac
""",
    # Installing NAME=VERSION records VERSION as installed, for the dpkg-query stub.
    "apt-get": r"""
if [ -e /stub-state/apt-fail ]; then echo "E: Version '$VERSION' was not found" >&2; exit 100; fi
mode="" skip=0
for arg in "$@"; do
  if [ "$skip" = 1 ]; then skip=0; continue; fi
  case $arg in
    -o | -c | -t) skip=1 ;;
    -*) ;;
    *)
      if [ -z "$mode" ]; then mode=$arg; continue; fi
      if [ "$mode" = install ]; then
        name=${arg%%=*} version=${arg#*=}
        [ "$version" = "$arg" ] && version=0-stub
        mkdir -p /stub-state/dpkg
        printf '%s' "$version" >"/stub-state/dpkg/$name"
        rm -f "/stub-state/dpkg/$name.status"
      fi ;;
  esac
done
""",
    "dpkg-query": r"""
format='${Version}'
for arg in "$@"; do
  case $arg in -f=* | --showformat=*) format=${arg#*=} ;; esac
done
package=${!#}
[ -f "/stub-state/dpkg/$package" ] || { echo "dpkg-query: no packages found matching $package" >&2; exit 1; }
version=$(</stub-state/dpkg/$package)
status=installed
[ -f "/stub-state/dpkg/$package.status" ] && status=$(<"/stub-state/dpkg/$package.status")
format=${format//'${Version}'/$version}
printf '%s' "${format//'${db:Status-Status}'/$status}"
""",
    "curl": r"""
case ${!#} in
  https://nvidia.github.io/libnvidia-container/gpgkey)
    printf '%s\n' '-----BEGIN PGP PUBLIC KEY BLOCK-----' '' 'c3R1YiBrZXk=' '-----END PGP PUBLIC KEY BLOCK-----' ;;
  https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list)
    # What NVIDIA serves at this address.
    printf '%s\n' 'deb https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /' \
      '#deb https://nvidia.github.io/libnvidia-container/experimental/deb/$(ARCH) /' ;;
  *) echo "curl: (6) Could not resolve host" >&2; exit 6 ;;
esac
""",
    "gpg": r"""
case " $* " in *" --dearmor "*) ;; *) echo "stub gpg: unexpected: $*" >&2; exit 2 ;; esac
printf 'dearmored:'
cat
""",
    "ufw": r"""
case "$*" in
  "status verbose" | status) [ -e /stub-state/ufw-status ] && cat /stub-state/ufw-status || echo "Status: inactive" ;;
  *) echo "stub ufw: unexpected: $*" >&2; exit 2 ;;
esac
""",
    # FSTYPE of the longest mount point in /stub-state/mounts ("PATH FSTYPE" lines) holding PATH.
    "findmnt": r"""
path=${!#} best="" fstype=ext4
if [ -f /stub-state/mounts ]; then
  while read -r mount type; do
    case $path/ in
      "${mount%/}"/*) if [ ${#mount} -gt ${#best} ]; then best=$mount fstype=$type; fi ;;
    esac
  done </stub-state/mounts
fi
echo "$fstype"
""",
}

NFT_STUB = r"""
[ "$*" = "list ruleset" ] || { echo "stub nft: unexpected: $*" >&2; exit 2; }
cat /stub-state/nft-ruleset 2>/dev/null || true
"""

# Stands in for huggingface_hub's `hf`: records what it was given, then lays out the snapshot.
HF_STUB = r"""#!/bin/bash
printf '%s\0' "$@" >/stub-log/hf-argv
/usr/bin/env -0 >/stub-log/hf-env
printf '%s' "$HF_TOKEN_PATH" >/stub-log/hf-token-path
/bin/cat "$HF_TOKEN_PATH" >/stub-log/hf-token-seen
/usr/bin/stat -c '%a' "$HF_TOKEN_PATH" "${HF_TOKEN_PATH%/*}" >/stub-log/hf-token-modes
[ -e /stub-state/hf-fail ] && { echo "401 Client Error: Unauthorized" >&2; exit 1; }
repo=$2 revision=$4 cache=$6
snapshot="$cache/models--${repo//\//--}/snapshots/$revision"
mkdir -p "$snapshot"
echo '{}' >"$snapshot/config.json"
echo "$snapshot"
"""

# Stands in for a venv's python: `-m pip install` lays down the `hf` console script, as pip would
# (one that fails to start when /stub-state/hf-broken exists, like a CLI missing a dependency).
VENV_PYTHON_STUB = r"""
if [ "$1 $2 $3" = "-m pip install" ]; then
  cat >"${0%/*}/hf" <<'HF'
#!/bin/sh
[ -e /stub-state/hf-broken ] && echo "ModuleNotFoundError: No module named 'click'" >&2 && exit 1
exit 0
HF
  chmod +x "${0%/*}/hf"
fi
exit 0
"""


@dataclass
class Host:
    root: Path

    def path(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def write(self, path: str, text: str, mode: int = 0o644) -> Path:
        target = self.path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            target.unlink()
        target.write_text(text)
        target.chmod(mode)
        return target

    def stub(self, name: str, body: str, where: str = "/stubs") -> None:
        self.write(f"{where}/{name}", PRELUDE + body, 0o755)

    def state(self, name: str, text: str = "") -> None:
        self.write(f"/stub-state/{name}", text)

    def run(
        self, script: str, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_script(self.root, script, *args, stdin=stdin, env=env)

    def records(self) -> list[list[str]]:
        """Every stub call so far, in order, as [name, arg...]."""
        log = self.path("/stub-log/calls")
        records = log.read_text().split("\x1e\0") if log.exists() else []
        return [record.split("\0")[:-1] for record in records if record]

    def calls(self, name: str) -> list[list[str]]:
        """The arguments of every call of the stub `name`."""
        return [record[1:] for record in self.records() if record[0] == name]


@pytest.fixture(scope="session")
def rootfs() -> Path:
    return debian_rootfs()


@pytest.fixture
def host(rootfs: Path, tmp_path: Path) -> Iterator[Host]:
    with fresh_root(rootfs, tmp_path / "host") as root:
        install_scripts(root, SCRIPTS)
        h = Host(root)
        for directory in ("/stub-log", "/stub-state", "/fixtures"):
            h.path(directory).mkdir()
        for fixture in ("nvidia-smi-L.txt", "query-gpu-noheader.csv"):
            shutil.copy(FIXTURES / fixture, h.path("/fixtures"))
        for name, body in STUBS.items():
            h.stub(name, body)
        yield h


def lines(text: str) -> list[str]:
    return text.strip().splitlines()


# --- every script -------------------------------------------------------------------------------


def shellcheck() -> str:
    venv_copy = Path(sys.executable).parent / "shellcheck"
    return str(venv_copy) if venv_copy.exists() else require_tool("shellcheck")


def test_all_scripts_present() -> None:
    names = {s.name for s in SCRIPTS}
    assert names >= {
        "toolkit.sh",
        "runtime.sh",
        "verify.sh",
        "storage.sh",
        "firewall.sh",
        "prefetch-hf.sh",
        "pull-images.sh",
        "tools.sh",
    }


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_passes_shellcheck(script: Path) -> None:
    result = subprocess.run([shellcheck(), "-S", "warning", str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_conventions(script: Path) -> None:
    """Strict mode, no tracing (it would print secrets), and every exit code it uses documented."""
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert not re.search(r"set\s+-[a-z]*x|set\s+-o\s+xtrace", text)
    header = text.split("\nset -euo pipefail\n")[0]
    assert "# Exit codes:" in header
    documented = {int(code) for code in re.findall(r"^#\s+(\d+)\s", header, re.MULTILINE)}
    documented |= {int(code) for code in re.findall(r";\s+(\d+)\s", header)}
    used = {int(code) for code in re.findall(r"\b(?:die|exit|sys\.exit\()\s*(\d+)", text)}
    assert used <= documented, f"undocumented exit codes {sorted(used - documented)}"


# --- toolkit.sh ---------------------------------------------------------------------------------

FEDORA = """NAME="Fedora Linux"
VERSION="40 (Workstation Edition)"
ID=fedora
VERSION_ID=40
PRETTY_NAME="Fedora Linux 40 (Workstation Edition)"
"""


def test_toolkit_refuses_unsupported_os(host: Host) -> None:
    host.write("/etc/os-release", FEDORA)
    result = host.run("toolkit.sh", VERSION)
    assert result.returncode == 3
    assert "unsupported OS: Fedora Linux 40 (Workstation Edition)" in result.stderr
    assert host.calls("apt-get") == [] and host.calls("curl") == []


@pytest.mark.parametrize(
    ("os_release", "supported"),
    [
        ('ID=ubuntu\nID_LIKE=debian\nPRETTY_NAME="Ubuntu 24.04.2 LTS"\n', True),
        ('ID=linuxmint\nID_LIKE="ubuntu debian"\nPRETTY_NAME="Linux Mint 22"\n', True),
        ('ID="rhel"\nID_LIKE="fedora"\nPRETTY_NAME="Red Hat Enterprise Linux 9.4 (Plow)"\n', False),
        ('ID=debianish\nPRETTY_NAME="Not Debian"\n', False),
    ],
)
def test_toolkit_os_detection(host: Host, os_release: str, supported: bool) -> None:
    host.write("/etc/os-release", os_release)
    result = host.run("toolkit.sh", VERSION)
    assert (result.returncode == 0) is supported, result.stderr
    assert (result.returncode == 3) is not supported


def test_toolkit_installs_pinned_then_does_nothing(host: Host) -> None:
    first = host.run("toolkit.sh", VERSION)
    assert first.returncode == 0, first.stderr
    installs = [call for call in host.calls("apt-get") if "install" in call]
    assert len(installs) == 1
    pins = [arg for arg in installs[0] if "=" in arg and not arg.startswith("-") and "::" not in arg]
    assert sorted(pins) == sorted(f"{p}={VERSION}" for p in (*TOOLKIT_PACKAGES, "libnvidia-container1"))
    assert "-y" in installs[0]
    apt = host.calls("apt-get")
    assert "update" in apt[apt.index(installs[0]) - 1], "apt-get update must run right before the install"
    assert f"toolkit: installed {VERSION} (was not installed)" in first.stdout

    # Signed-by: apt trusts NVIDIA's key for this repository only.
    assert host.path(KEYRING).read_text().startswith("dearmored:-----BEGIN PGP PUBLIC KEY BLOCK-----")
    source = host.path(APT_LIST).read_text()
    assert (
        f"deb [signed-by={KEYRING}] https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /"
        in source.splitlines()
    )
    assert all(f"[signed-by={KEYRING}]" in line for line in source.splitlines() if "deb https" in line)

    seen = len(host.records())
    second = host.run("toolkit.sh", VERSION)
    assert second.returncode == 0, second.stderr
    assert lines(second.stdout) == [f"toolkit: {VERSION} already installed"]
    assert [record[0] for record in host.records()[seen:]] == ["dpkg-query"]


def test_toolkit_upgrade_keeps_unchanged_repo_files(host: Host) -> None:
    assert host.run("toolkit.sh", "1.17.7-1").returncode == 0
    keyring_mtime = host.path(KEYRING).stat().st_mtime_ns
    result = host.run("toolkit.sh", VERSION)
    assert result.returncode == 0, result.stderr
    assert f"toolkit: keyring unchanged ({KEYRING})" in result.stdout
    assert f"toolkit: apt source unchanged ({APT_LIST})" in result.stdout
    assert f"toolkit: installed {VERSION} (was 1.17.7-1)" in result.stdout
    assert host.path(KEYRING).stat().st_mtime_ns == keyring_mtime


def test_toolkit_rewrites_an_unsigned_list(host: Host) -> None:
    host.write(APT_LIST, "deb https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /\n")
    result = host.run("toolkit.sh", VERSION)
    assert result.returncode == 0, result.stderr
    assert f"toolkit: apt source written ({APT_LIST})" in result.stdout
    assert f"signed-by={KEYRING}" in host.path(APT_LIST).read_text()


def test_toolkit_reinstalls_a_removed_package(host: Host) -> None:
    """dpkg keeps the version of a package removed without purge: that is not installed."""
    host.state("dpkg/nvidia-container-toolkit", VERSION)
    host.state("dpkg/nvidia-container-toolkit.status", "config-files")
    result = host.run("toolkit.sh", VERSION)
    assert result.returncode == 0, result.stderr
    assert [c for c in host.calls("apt-get") if "install" in c]


def test_toolkit_failed_install_exits_10(host: Host) -> None:
    host.state("apt-fail")
    result = host.run("toolkit.sh", VERSION)
    assert result.returncode == 10
    assert "apt-get" in result.stderr


def test_toolkit_rejects_bad_version(host: Host) -> None:
    result = host.run("toolkit.sh", "latest; rm -rf /")
    assert result.returncode == 2
    assert host.records() == []


# --- runtime.sh ---------------------------------------------------------------------------------

DAEMON_JSON = "/etc/docker/daemon.json"


def daemon_json(host: Host) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(host.path(DAEMON_JSON).read_text())
    return loaded


def restarts(host: Host) -> list[list[str]]:
    return [c for c in host.calls("systemctl") if c[:1] == ["restart"]]


def test_runtime_merges_without_clobbering_and_restarts_only_on_change(host: Host) -> None:
    host.write(DAEMON_JSON, json.dumps({"data-root": "/mnt/docker", "log-opts": {"max-size": "10m"}}, indent=2))
    first = host.run("runtime.sh", "100m", "5")
    assert first.returncode == 0, first.stderr
    assert daemon_json(host) == {
        "data-root": "/mnt/docker",
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "5"},
        "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}},
    }
    assert restarts(host) == [["restart", "docker"]]
    assert lines(first.stdout)[-1] == "docker: restarted (daemon.json changed)"

    second = host.run("runtime.sh", "100m", "5")
    assert second.returncode == 0, second.stderr
    assert lines(second.stdout)[-1] == "docker: unchanged"
    assert "docker: nvidia runtime already registered" in second.stdout
    assert len(restarts(host)) == 1
    assert len(host.calls("nvidia-ctk")) == 2


def test_runtime_creates_daemon_json(host: Host) -> None:
    result = host.run("runtime.sh", "100m", "5")
    assert result.returncode == 0, result.stderr
    config = daemon_json(host)
    assert config["log-driver"] == "json-file"
    assert config["log-opts"] == {"max-size": "100m", "max-file": "5"}
    assert "nvidia" in config["runtimes"]
    assert restarts(host) == [["restart", "docker"]]


def test_runtime_leaves_another_log_driver_alone(host: Host) -> None:
    host.write(DAEMON_JSON, json.dumps({"log-driver": "journald", "log-opts": {"tag": "{{.Name}}"}}))
    result = host.run("runtime.sh", "100m", "5")
    assert result.returncode == 0, result.stderr
    config = daemon_json(host)
    assert config["log-driver"] == "journald"
    assert config["log-opts"] == {"tag": "{{.Name}}"}


def test_runtime_already_configured_does_not_restart(host: Host) -> None:
    host.write(
        DAEMON_JSON,
        json.dumps(
            {
                "log-driver": "json-file",
                "log-opts": {"max-file": "3", "max-size": "50m"},
                "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}},
            }
        ),
    )
    result = host.run("runtime.sh", "100m", "5")
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout)[-1] == "docker: unchanged"
    assert restarts(host) == []


def test_runtime_refuses_malformed_daemon_json(host: Host) -> None:
    broken = '{"data-root": "/mnt/docker",, }\n'
    host.write(DAEMON_JSON, broken)
    result = host.run("runtime.sh", "100m", "5")
    assert result.returncode == 8
    assert DAEMON_JSON in result.stderr and "not valid JSON" in result.stderr
    assert host.path(DAEMON_JSON).read_text() == broken
    assert host.calls("nvidia-ctk") == [] and restarts(host) == []


def test_runtime_needs_nvidia_ctk(host: Host) -> None:
    host.path("/stubs/nvidia-ctk").unlink()
    result = host.run("runtime.sh", "100m", "5")
    assert result.returncode == 14
    assert "toolkit.sh" in result.stderr


def test_runtime_failed_restart_exits_15(host: Host) -> None:
    host.state("systemctl-fail")
    result = host.run("runtime.sh", "100m", "5")
    assert result.returncode == 15
    assert "journalctl -u docker" in result.stderr


# --- verify.sh ----------------------------------------------------------------------------------

IMAGE = "nvidia/cuda:12.9.1-base-ubuntu24.04"


def expected_inventory() -> str:
    fixture = (FIXTURES / "query-gpu-noheader.csv").read_text().splitlines()
    return "".join(f"{line}, Disabled\n" for line in fixture) + "uvm=ok\n"


def test_verify_prints_inventory_then_uvm_ok(host: Host) -> None:
    host.write("/dev/nvidia-uvm", "")
    result = host.run("verify.sh", IMAGE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_inventory()
    [run] = host.calls("docker")
    assert run[:6] == ["run", "--rm", "--gpus", "all", IMAGE, "sh"]
    assert run[6] == "-c" and f"--query-gpu={QUERY} --format=csv,noheader,nounits" in run[7]
    assert "/dev/nvidia-uvm" in run[7]
    [gpu] = parse_inventory(result.stdout)
    assert (gpu.index, gpu.name, gpu.memory_mib, gpu.mig_mode) == (0, "NVIDIA H100 80GB HBM3", 81559, "Disabled")
    assert "verify: host driver ok (1 GPU(s))" in result.stderr


def test_verify_stops_when_the_driver_is_not_loaded(host: Host) -> None:
    host.state("nvidia-smi-fail")
    result = host.run("verify.sh", IMAGE)
    assert result.returncode == 4
    assert "driver is not loaded" in result.stderr and "couldn't communicate" in result.stderr
    assert result.stdout == "" and host.calls("docker") == []


def test_verify_stops_without_nvidia_uvm(host: Host) -> None:
    result = host.run("verify.sh", IMAGE)
    assert result.returncode == 5
    assert "CUDA check failed: /dev/nvidia-uvm missing inside the container" in result.stderr
    assert result.stdout == ""


def test_verify_stops_when_docker_run_fails(host: Host) -> None:
    host.write("/dev/nvidia-uvm", "")
    host.state("docker-run-fail")
    result = host.run("verify.sh", IMAGE)
    assert result.returncode == 9
    assert f"docker run --rm --gpus all {IMAGE} failed (exit 125)" in result.stderr
    assert result.stdout == ""


# --- storage.sh ---------------------------------------------------------------------------------


def test_storage_creates_dirs_with_owner_then_changes_nothing(host: Host) -> None:
    first = host.run("storage.sh", "1000:1000", "0", "/srv/models", "/srv/compile")
    assert first.returncode == 0, first.stderr
    for directory in ("/srv/models", "/srv/compile"):
        info = host.path(directory).stat()
        assert (info.st_uid, info.st_gid) == (1000, 1000)
        assert f"storage: {directory} created" in first.stdout
        assert f"storage: {directory} ok (ext4)" in first.stdout
    second = host.run("storage.sh", "1000:1000", "0", "/srv/models", "/srv/compile")
    assert second.returncode == 0, second.stderr
    assert lines(second.stdout) == ["storage: /srv/models ok (ext4)", "storage: /srv/compile ok (ext4)"]


def test_storage_changes_owner_of_existing_dir(host: Host) -> None:
    host.path("/srv/models").mkdir(parents=True)
    result = host.run("storage.sh", "1000:1000", "0", "/srv/models")
    assert result.returncode == 0, result.stderr
    assert "storage: /srv/models owner set to 1000:1000 (was 0:0)" in result.stdout
    assert host.path("/srv/models").stat().st_uid == 1000


@pytest.mark.parametrize("fstype", ["nfs4", "fuse.sshfs", "cifs"])
def test_storage_refuses_network_storage_unless_allowed(host: Host, fstype: str) -> None:
    host.state("mounts", f"/mnt/share {fstype}\n")
    host.path("/mnt/share").mkdir()  # the mount point exists; what is to be created under it does not
    refused = host.run("storage.sh", "1000:1000", "0", "/mnt/share/models")
    assert refused.returncode == 6
    assert "/mnt/share/models" in refused.stderr and fstype in refused.stderr
    assert "allowNetworkStorage" in refused.stderr
    assert not host.path("/mnt/share/models").exists()

    allowed = host.run("storage.sh", "1000:1000", "1", "/mnt/share/models")
    assert allowed.returncode == 0, allowed.stderr
    assert f"storage: /mnt/share/models ok ({fstype})" in allowed.stdout


def test_storage_falls_back_to_stat_without_findmnt(host: Host) -> None:
    host.path("/stubs/findmnt").unlink()
    # Without /proc (as in this chroot) the real findmnt fails too: stat -f answers.
    result = host.run("storage.sh", "0:0", "0", "/srv/models")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"storage: /srv/models created\nstorage: /srv/models ok \(\S+\)\n", result.stdout)


@pytest.mark.parametrize(
    "args", [("root", "0", "/srv"), ("0:0", "yes", "/srv"), ("0:0", "0", "relative"), ("0:0", "0")]
)
def test_storage_rejects_bad_arguments(host: Host, args: tuple[str, ...]) -> None:
    assert host.run("storage.sh", *args).returncode == 2


# --- firewall.sh --------------------------------------------------------------------------------

UFW_HEADER = """Status: active
Logging: on (low)
Default: deny (incoming), allow (outgoing), deny (routed)
New profiles: skip

To                         Action      From
--                         ------      ----
"""


def test_firewall_fails_when_ufw_admits_a_port_from_anywhere(host: Host) -> None:
    host.state(
        "ufw-status",
        UFW_HEADER
        + "22/tcp                     ALLOW IN    Anywhere\n"
        + "8000/tcp                   ALLOW IN    Anywhere\n"
        + "8001/tcp                   ALLOW IN    10.0.0.5\n"
        + "22/tcp (v6)                ALLOW IN    Anywhere (v6)\n"
        + "8000/tcp (v6)              ALLOW IN    Anywhere (v6)\n",
    )
    result = host.run("firewall.sh", "8000,8001", "10.0.0.5")
    assert result.returncode == 7
    assert "ufw delete allow 8000/tcp" in result.stderr
    assert "ufw allow from 10.0.0.5 to any port 8000 proto tcp" in result.stderr
    assert "8001" not in result.stderr
    assert result.stderr.count("allows worker port 8000 from Anywhere") == 1
    assert "(rule: 8000/tcp ALLOW IN Anywhere)" in result.stderr


def test_firewall_fails_on_a_port_range_or_default_allow(host: Host) -> None:
    host.state("ufw-status", UFW_HEADER + "8000:8010/tcp              LIMIT IN    Anywhere\n")
    ranged = host.run("firewall.sh", "8005", "10.0.0.5")
    assert ranged.returncode == 7 and "ufw delete limit 8000:8010/tcp" in ranged.stderr

    host.state("ufw-status", UFW_HEADER.replace("deny (incoming)", "allow (incoming)"))
    default_allow = host.run("firewall.sh", "8000", "10.0.0.5")
    assert default_allow.returncode == 7 and "ufw default deny incoming" in default_allow.stderr


def test_firewall_passes_when_only_the_gateway_is_allowed(host: Host) -> None:
    host.state(
        "ufw-status",
        UFW_HEADER
        + "22/tcp                     ALLOW IN    Anywhere\n"
        + "8000/tcp                   ALLOW IN    10.0.0.5\n"
        + "8000/udp                   ALLOW IN    Anywhere\n",
    )
    result = host.run("firewall.sh", "8000", "10.0.0.5")
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == ["firewall: ufw active; worker ports 8000 are not open to Anywhere"]


def test_firewall_warns_when_nftables_never_mentions_a_port(host: Host) -> None:
    host.stub("nft", NFT_STUB)
    host.state(
        "nft-ruleset",
        """table ip filter {
\tchain DOCKER {
\t\tiifname != "docker0" oifname "docker0" ip daddr 172.17.0.2 tcp dport 8000 counter packets 0 bytes 0 accept
\t}
\tchain INPUT {
\t\ttype filter hook input priority filter; policy accept;
\t\ttcp dport 22 accept
\t}
}
""",
    )
    result = host.run("firewall.sh", "8000", "10.0.0.5")
    assert result.returncode == 0, result.stderr
    assert "no nftables rule mentions worker port(s) 8000" in result.stderr

    host.state(
        "nft-ruleset",
        """table ip filter {
\tchain DOCKER-USER {
\t\tip saddr != 10.0.0.5 tcp dport 8000 drop
\t}
}
""",
    )
    covered = host.run("firewall.sh", "8000", "10.0.0.5")
    assert covered.returncode == 0 and "warning: no nftables" not in covered.stderr
    assert "nftables rules mention worker ports 8000" in covered.stdout


def test_firewall_without_ufw_or_nftables(host: Host) -> None:
    host.path("/stubs/ufw").unlink()
    result = host.run("firewall.sh", "8000,8001", "10.0.0.5")
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [
        "firewall: no ufw/nftables found; restrict 8000,8001 to 10.0.0.5 in your network firewall"
    ]


def test_firewall_no_ports(host: Host) -> None:
    result = host.run("firewall.sh", "", "")
    assert result.returncode == 0
    assert lines(result.stdout) == ["firewall: no published worker ports"]
    assert host.calls("ufw") == []


# --- tools.sh -----------------------------------------------------------------------------------


def test_tools_installs_pins_once(host: Host) -> None:
    host.stub("python", VENV_PYTHON_STUB, where="/opt/venv/bin")
    host.write("/opt/venv/pyvenv.cfg", "home = /usr/bin\n")
    first = host.run("tools.sh", "/opt/venv", "1.1.5", "1.44.8")
    assert first.returncode == 0, first.stderr
    installs = [c for c in host.calls("python") if c[:3] == ["-m", "pip", "install"]]
    assert len(installs) == 1 and installs[0][-2:] == ["huggingface_hub==1.1.5", "boto3==1.44.8"]
    assert "tools: installed huggingface_hub==1.1.5 boto3==1.44.8 into /opt/venv" in first.stdout

    second = host.run("tools.sh", "/opt/venv", "1.1.5", "1.44.8")
    assert lines(second.stdout) == ["tools: /opt/venv already has huggingface_hub==1.1.5 boto3==1.44.8"]
    assert len([c for c in host.calls("python") if "install" in c]) == 1

    bumped = host.run("tools.sh", "/opt/venv", "1.2.0", "1.44.8")
    assert bumped.returncode == 0 and len([c for c in host.calls("python") if "install" in c]) == 2


def test_tools_fails_when_the_installed_hf_does_not_run(host: Host) -> None:
    host.stub("python", VENV_PYTHON_STUB, where="/opt/venv/bin")
    host.state("hf-broken")
    result = host.run("tools.sh", "/opt/venv", "1.1.5", "1.44.8")
    assert result.returncode == 13
    assert "/opt/venv/bin/hf does not run" in result.stderr
    assert not host.path("/opt/venv/.inference-stack-tools").exists()


def test_tools_installs_python3_venv_when_missing(host: Host) -> None:
    """Debian's python3 has no ensurepip (as in this chroot): the script asks apt for python3-venv."""
    result = host.run("tools.sh", "/opt/venv", "1.1.5", "1.44.8")
    assert ["-q", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "python3-venv"] in host.calls("apt-get")
    # The stub apt-get installs nothing, so the real `python3 -m venv` still fails, clearly.
    assert result.returncode == 13
    assert "python3 -m venv /opt/venv failed" in result.stderr


def test_tools_refuses_a_non_venv_directory(host: Host) -> None:
    host.write("/opt/data/precious", "keep me")
    result = host.run("tools.sh", "/opt/data", "1.1.5", "1.44.8")
    assert result.returncode == 13
    assert host.path("/opt/data/precious").read_text() == "keep me"


# --- prefetch-hf.sh -----------------------------------------------------------------------------

SNAPSHOT = f"/srv/models/hub/models--HuggingFaceTB--SmolLM2-1.7B-Instruct/snapshots/{REVISION}"


def prefetch(host: Host, stdin: bytes, revision: str = REVISION) -> subprocess.CompletedProcess[str]:
    return host.run(
        "prefetch-hf.sh",
        "HuggingFaceTB/SmolLM2-1.7B-Instruct",
        revision,
        "/srv/models",
        "/opt/venv",
        stdin=stdin,
        env={"HF_TOKEN": "hf_inherited_token_must_not_win"},
    )


def test_prefetch_hands_the_token_over_as_a_file_only(host: Host) -> None:
    host.write("/opt/venv/bin/hf", HF_STUB, 0o755)
    # Log every env, cat, mktemp and rm the script runs, to prove none of them saw the token.
    for name, real in (("env", "/usr/bin/env"), ("cat", "/bin/cat"), ("mktemp", "/bin/mktemp"), ("rm", "/bin/rm")):
        host.stub(name, f'exec {real} "$@"\n')
    host.path("/srv/models").mkdir(parents=True)
    os.chown(host.path("/srv/models"), 1000, 1000)  # as storage.sh leaves it
    result = prefetch(host, f"{TOKEN}\n".encode())
    assert result.returncode == 0, result.stderr

    argv = host.path("/stub-log/hf-argv").read_text().split("\0")[:-1]
    assert argv == [
        "download",
        "HuggingFaceTB/SmolLM2-1.7B-Instruct",
        "--revision",
        REVISION,
        "--cache-dir",
        "/srv/models/hub",
    ]
    env = dict(item.split("=", 1) for item in host.path("/stub-log/hf-env").read_text().split("\0") if item)
    assert "HF_TOKEN" not in env and "HUGGING_FACE_HUB_TOKEN" not in env
    assert env["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert env["HF_TOKEN_PATH"] == host.path("/stub-log/hf-token-path").read_text()
    assert host.path("/stub-log/hf-token-seen").read_text().strip() == TOKEN
    assert host.path("/stub-log/hf-token-modes").read_text().split() == ["600", "700"]
    assert not host.path(env["HF_TOKEN_PATH"]).exists(), "the token file must be removed"

    assert host.calls("env"), "the passthrough stubs must have logged something"
    for where, text in {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "hf argv": "\0".join(argv),
        "hf env": "\0".join(f"{k}={v}" for k, v in env.items()),
        "logged argv": json.dumps(host.records()),
    }.items():
        assert TOKEN not in text, f"the token reached {where}"

    assert host.path(f"{SNAPSHOT}/.inference-stack-complete").exists()
    for written in (SNAPSHOT, f"{SNAPSHOT}/config.json", f"{SNAPSHOT}/.inference-stack-complete"):
        assert host.path(written).stat().st_uid == 1000, f"{written} should belong to the cache's owner"
    assert lines(result.stdout)[-1] == "weights: HuggingFaceTB/SmolLM2-1.7B-Instruct@" + REVISION + " downloaded"

    again = prefetch(host, f"{TOKEN}\n".encode())
    assert lines(again.stdout) == [f"weights: HuggingFaceTB/SmolLM2-1.7B-Instruct@{REVISION} already cached"]


def test_prefetch_without_a_token(host: Host) -> None:
    host.write("/opt/venv/bin/hf", HF_STUB, 0o755)
    result = prefetch(host, b"")
    assert result.returncode == 0, result.stderr
    assert host.path("/stub-log/hf-token-seen").read_text() == ""


def test_prefetch_skips_a_cached_revision(host: Host) -> None:
    host.write("/opt/venv/bin/hf", HF_STUB, 0o755)
    host.write(f"{SNAPSHOT}/.inference-stack-complete", "")
    result = prefetch(host, f"{TOKEN}\n".encode())
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [f"weights: HuggingFaceTB/SmolLM2-1.7B-Instruct@{REVISION} already cached"]
    assert not host.path("/stub-log/hf-argv").exists()


@pytest.mark.parametrize("revision", ["main", REVISION[:12], REVISION.upper(), f"{REVISION}0"])
def test_prefetch_rejects_a_revision_that_is_not_a_commit(host: Host, revision: str) -> None:
    host.write("/opt/venv/bin/hf", HF_STUB, 0o755)
    result = prefetch(host, f"{TOKEN}\n".encode(), revision)
    assert result.returncode == 2
    assert "40-hex" in result.stderr
    assert not host.path("/stub-log/hf-argv").exists()


def test_prefetch_failed_download_leaves_no_marker(host: Host) -> None:
    host.write("/opt/venv/bin/hf", HF_STUB, 0o755)
    host.state("hf-fail")
    result = prefetch(host, f"{TOKEN}\n".encode())
    assert result.returncode == 12
    assert TOKEN not in result.stderr
    assert not host.path(f"{SNAPSHOT}/.inference-stack-complete").exists()


# --- pull-images.sh -----------------------------------------------------------------------------


def test_pull_images_pulls_only_missing_images(host: Host) -> None:
    host.state("docker-images", "vllm/vllm-openai:v0.32.0\n")
    first = host.run("pull-images.sh", "vllm/vllm-openai:v0.32.0", "nvidia/cuda:12.9.1-base-ubuntu24.04")
    assert first.returncode == 0, first.stderr
    assert lines(first.stdout) == [
        "image: vllm/vllm-openai:v0.32.0 present",
        "image: nvidia/cuda:12.9.1-base-ubuntu24.04 pulled",
    ]
    assert [c for c in host.calls("docker") if c[0] == "pull"] == [["pull", "nvidia/cuda:12.9.1-base-ubuntu24.04"]]

    second = host.run("pull-images.sh", "vllm/vllm-openai:v0.32.0", "nvidia/cuda:12.9.1-base-ubuntu24.04")
    assert second.returncode == 0
    assert all(line.endswith(" present") for line in lines(second.stdout))
    assert len([c for c in host.calls("docker") if c[0] == "pull"]) == 1


def test_pull_images_names_the_image_that_failed(host: Host) -> None:
    host.state("docker-pull-fail", "vllm/vllm-openai:v9.9.9\n")
    result = host.run("pull-images.sh", "vllm/vllm-openai:v9.9.9")
    assert result.returncode == 11
    assert "docker pull vllm/vllm-openai:v9.9.9 failed" in result.stderr


def test_pull_images_rejects_an_option_as_image(host: Host) -> None:
    assert host.run("pull-images.sh", "--all-tags").returncode == 2
    assert host.calls("docker") == []


def test_chroot_is_debian_with_python(host: Host) -> None:
    """The scripts meet a real distribution userland, not the test machine's."""
    assert "ID=debian" in host.path("/etc/os-release").read_text()
    result = run_script(host.root, "pull-images.sh")
    assert result.returncode == 0 and lines(result.stdout) == ["image: no images requested"]
    assert os.path.exists(host.path("/usr/bin/python3"))
