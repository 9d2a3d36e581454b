#!/usr/bin/env bash
# An external garbage collector for a filestorage2 storage, offline (no mount needed).
#
# filestorage2 has no built-in garbage collection: a collector decides what is garbage
# and issues ordinary transactional deletions. This one treats as live every object
# reachable from the root oid 0000000000000000 by references written in the data as
# "<oid XXXXXXXXXXXXXXXX>" (a stand-in for real pickle references), and deletes every
# other live object in ONE transaction based on the snapshot it read: if anything
# changes in between, the commit fails with a conflict (exit 4) and nothing is deleted.
#
# usage: offline-gc.sh STORAGE_DIR [--dry-run]
set -euo pipefail
dir=${1:?usage: offline-gc.sh STORAGE_DIR [--dry-run]}
dry=${2:-}
fs2=${FS2:-fs2}

base=$("$fs2" info "$dir" --no-count | awk '/^last tid:/ {print $3}')
declare -A live=()
todo=(0000000000000000)
while ((${#todo[@]})); do
  oid=${todo[-1]}; unset 'todo[-1]'
  [[ -n ${live[$oid]:-} ]] && continue
  live[$oid]=1
  # References in the object's data as of the snapshot.
  while read -r ref; do
    [[ -n $ref ]] && todo+=("$ref")
  done < <("$fs2" cat "$dir" "$oid" --at "$base" 2>/dev/null | grep -o '<oid [0-9a-f]\{16\}>' | tr -d '<>' | cut -c5- || true)
done

deletes=()
while read -r oid _size _tid; do
  [[ -z ${live[$oid]:-} ]] && deletes+=(--delete "$oid")
done < <("$fs2" ls "$dir" --at "$base")

if ((${#deletes[@]} == 0)); then
  echo "no garbage (snapshot $base, ${#live[@]} reachable objects)"
  exit 0
fi
echo "garbage: $((${#deletes[@]} / 2)) objects (snapshot $base, ${#live[@]} reachable)"
if [[ $dry == --dry-run ]]; then
  printf '%s\n' "${deletes[@]}" | grep -v -- --delete
  exit 0
fi
"$fs2" commit "$dir" --base "$base" --user gc --description "offline-gc: unreachable objects" "${deletes[@]}"
