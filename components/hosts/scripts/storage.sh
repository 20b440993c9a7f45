#!/usr/bin/env bash
# Prepare the model and compile cache directories on local storage, owned by the workers' user.
# Network filesystems are refused unless allowed: weights load from them many times slower, and
# the Hugging Face cache's file locks are unreliable on them.
#
# Usage: storage.sh OWNER ALLOW_NETWORK DIR...   e.g. storage.sh 1000:1000 0 /srv/models /srv/compile
#   OWNER is numeric UID:GID; ALLOW_NETWORK is 1 (allowNetworkStorage: true) or 0.
# Exit codes:
#   0   every DIR exists, owned by OWNER, on acceptable storage
#   1   unexpected failure (the failing command's own message comes first)
#   2   bad arguments
#   6   a DIR is on network storage and allowNetworkStorage is off
#   17  a DIR could not be created or given to OWNER
set -euo pipefail

die() {
  local code=$1
  shift
  printf 'storage: error: %s\n' "$*" >&2
  exit "$code"
}

[ "$#" -ge 3 ] || die 2 "usage: storage.sh OWNER ALLOW_NETWORK DIR..."
owner=$1
allow=$2
shift 2
[[ $owner =~ ^[0-9]+:[0-9]+$ ]] || die 2 "OWNER must be a numeric UID:GID like 1000:1000, not '$owner'"
case $allow in
  0 | 1) ;;
  *) die 2 "ALLOW_NETWORK must be 0 or 1, not '$allow'" ;;
esac
for dir in "$@"; do
  [[ $dir == /* ]] || die 2 "DIR must be an absolute path, not '$dir'"
done

# The filesystem a path is or would be on: a directory not yet created lands on its nearest
# existing ancestor's, so the check runs before anything is created there.
fstype_of() {
  local path=$1 fstype=""
  while [ ! -e "$path" ]; do
    path=$(dirname "$path")
  done
  fstype=$(findmnt -n -o FSTYPE -T "$path" 2>/dev/null) || fstype=""
  fstype=${fstype%%$'\n'*}
  [ -n "$fstype" ] || fstype=$(stat -f -c %T "$path")
  printf '%s' "$fstype"
}

is_network() {
  case $1 in
    # smb2 is how stat -f names SMB2/3 mounts where findmnt is unavailable.
    nfs | nfs4 | cifs | smb3 | smb2 | smbfs | fuse | fuse.* | sshfs | glusterfs | ceph | 9p) return 0 ;;
    *) return 1 ;;
  esac
}

for dir in "$@"; do
  fstype=$(fstype_of "$dir")
  if is_network "$fstype" && [ "$allow" != 1 ]; then
    die 6 "$dir is on network storage ($fstype): model weights load slowly from it and file locking is unreliable; use a local disk, or set allowNetworkStorage: true for this host to accept it"
  fi
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir" || die 17 "could not create $dir"
    echo "storage: $dir created"
  fi
  # -L: chown follows a symlinked DIR, so compare the owner of what it points to.
  current=$(stat -L -c %u:%g "$dir")
  if [ "$current" != "$owner" ]; then
    chown "$owner" "$dir" || die 17 "could not give $dir to $owner (a root-squashed network share refuses this)"
    echo "storage: $dir owner set to $owner (was $current)"
  fi
  echo "storage: $dir ok ($fstype)"
done
