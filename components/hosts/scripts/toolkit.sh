#!/usr/bin/env bash
# Install the NVIDIA Container Toolkit at one pinned version from NVIDIA's signed apt repository,
# so every GPU host runs the same container hook whichever day it was provisioned.
#
# Usage: toolkit.sh VERSION                  e.g. toolkit.sh 1.17.8-1
# Exit codes:
#   0   installed now, or VERSION was already installed
#   1   unexpected failure (the failing command's own message comes first)
#   2   bad arguments
#   3   unsupported OS: /etc/os-release names neither Ubuntu nor Debian (nor a derivative)
#   10  apt-get could not install the pinned packages (or curl/gnupg to fetch the repository key)
#   16  NVIDIA's repository key or list could not be fetched or was not what was expected
set -euo pipefail

readonly KEY_URL=https://nvidia.github.io/libnvidia-container/gpgkey
readonly LIST_URL=https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list
readonly KEYRING=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
readonly LIST=/etc/apt/sources.list.d/nvidia-container-toolkit.list
# All four at the same version: apt would otherwise pair the pinned toolkit with the newest libraries.
readonly PACKAGES=(nvidia-container-toolkit nvidia-container-toolkit-base libnvidia-container-tools libnvidia-container1)

die() {
  local code=$1
  shift
  printf 'toolkit: error: %s\n' "$*" >&2
  exit "$code"
}

[ "$#" -eq 1 ] || die 2 "usage: toolkit.sh VERSION (e.g. 1.17.8-1)"
version=$1
[[ $version =~ ^[0-9][A-Za-z0-9.+~:-]*$ ]] || die 2 "VERSION must be a Debian package version like 1.17.8-1, not '$version'"

os_release=/etc/os-release
[ -r "$os_release" ] || os_release=/usr/lib/os-release

# Read one os-release field without sourcing the file: it is data, not code to run as root.
os_field() {
  local line value
  [ -r "$os_release" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in
      "$1="*)
        value=${line#*=}
        value=${value#[\"\']}
        value=${value%[\"\']}
        printf '%s' "$value"
        return 0
        ;;
    esac
  done <"$os_release"
}

os_id=$(os_field ID)
os_like=$(os_field ID_LIKE)
pretty=$(os_field PRETTY_NAME)
case " $os_id $os_like " in
  *" ubuntu "* | *" debian "*) ;;
  *) die 3 "unsupported OS: ${pretty:-unknown} (ID=${os_id:-none}, ID_LIKE=${os_like:-none}); this installs the NVIDIA Container Toolkit only on Ubuntu or Debian hosts" ;;
esac

# A package removed without purge keeps its version in dpkg's database: only "installed" counts.
installed_version() {
  local line
  line=$(dpkg-query -W -f='${db:Status-Status} ${Version}' nvidia-container-toolkit 2>/dev/null) || return 0
  case $line in
    "installed "*) printf '%s' "${line#installed }" ;;
  esac
}

current=$(installed_version)
if [ "$current" = "$version" ]; then
  echo "toolkit: $version already installed"
  exit 0
fi

# Waiting for the dpkg lock rides out unattended-upgrades on a freshly booted host;
# apt's own output goes to stderr so stdout stays the short status lines.
apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 "$@" >&2
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

missing=()
command -v curl >/dev/null || missing+=(curl ca-certificates)
command -v gpg >/dev/null || missing+=(gnupg)
if [ "${#missing[@]}" -gt 0 ]; then
  apt_get update || die 10 "apt-get update failed (see above)"
  apt_get install -y --no-install-recommends "${missing[@]}" || die 10 "could not install ${missing[*]}, needed to fetch NVIDIA's repository key"
  echo "toolkit: installed ${missing[*]}"
fi

curl -fsSL --retry 3 --connect-timeout 20 "$KEY_URL" >"$work/key.asc" || die 16 "could not download $KEY_URL"
# dearmor needs no keyring; a private GNUPGHOME keeps gpg from creating one in root's home.
mkdir -m 700 "$work/gnupg"
GNUPGHOME="$work/gnupg" gpg --batch --dearmor <"$work/key.asc" >"$work/keyring.gpg" ||
  die 16 "could not convert the key from $KEY_URL (gpg --dearmor)"
[ -s "$work/keyring.gpg" ] || die 16 "the key from $KEY_URL is empty"

curl -fsSL --retry 3 --connect-timeout 20 "$LIST_URL" >"$work/upstream.list" || die 16 "could not download $LIST_URL"
sed "s#deb https://#deb [signed-by=$KEYRING] https://#g" "$work/upstream.list" >"$work/nvidia.list"
grep -qF "deb [signed-by=$KEYRING] https://" "$work/nvidia.list" ||
  die 16 "$LIST_URL has no 'deb https://' line to pin to the keyring; its format changed"

# Replace DEST only when its bytes differ, atomically, so a rerun touches nothing.
place() {
  local src=$1 dest=$2 label=$3
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    echo "toolkit: $label unchanged ($dest)"
    return 0
  fi
  install -D -m 0644 "$src" "$dest.inference-stack.tmp"
  mv -f "$dest.inference-stack.tmp" "$dest"
  echo "toolkit: $label written ($dest)"
}
place "$work/keyring.gpg" "$KEYRING" keyring
place "$work/nvidia.list" "$LIST" "apt source"

pins=()
for package in "${PACKAGES[@]}"; do
  pins+=("$package=$version")
done
apt_get update || die 10 "apt-get update failed (see above)"
# Downgrades are allowed because the pin, not the newest release, is the configuration;
# existing config files are kept instead of prompting, which would hang without a terminal.
apt_get install -y --allow-downgrades -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${pins[@]}" ||
  die 10 "apt-get could not install ${pins[*]}; is $version published in NVIDIA's repository?"

now=$(installed_version)
[ "$now" = "$version" ] || die 10 "after apt-get install, nvidia-container-toolkit is at '${now:-nothing}', not $version"
echo "toolkit: installed $version (was ${current:-not installed})"
