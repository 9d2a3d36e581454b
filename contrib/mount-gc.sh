#!/usr/bin/env bash
# An external garbage collector that uses nothing but a writable `fs2 mount`.
#
# filestorage2 has no built-in garbage collection: a collector decides what is garbage
# and deletes it in an ordinary transaction. This one treats as live every object
# reachable from the root oid (default 0000000000000000) by references written in the
# data as "<oid XXXXXXXXXXXXXXXX>" (the convention of offline-gc.sh, a stand-in for real
# pickle references), and deletes every other live object in ONE transaction:
#
#   1. mkdir txn/gc-PID           begins a transaction; ctl reads "open <base>"
#   2. walk @<base>/              the snapshot the transaction is checked against
#   3. rm txn/gc-PID/<oid> ...    stage the deletions
#   4. echo commit > ctl          all or nothing. If another transaction changed one of
#                                 the garbage objects after <base>, the commit fails with
#                                 ESTALE (exit 4), ctl says which, and nothing is deleted.
#
# Killed midway, nothing is deleted (the EXIT trap, or the next unmount, aborts).
#
# usage: mount-gc.sh MOUNTPOINT [--dry-run] [ROOT_OID]
# exit:  0 done (or nothing to do), 1 usage or mount error, 4 conflict (run it again)
set -euo pipefail
m=${1:?usage: mount-gc.sh MOUNTPOINT [--dry-run] [ROOT_OID]}
dry=
if [[ ${2:-} == --dry-run ]]; then dry=1; shift; fi
root=${2:-0000000000000000}
[[ -d $m/txn ]] || { echo "mount-gc: $m/txn missing: not a writable fs2 mount" >&2; exit 1; }

t=$m/txn/gc-$$
mkdir "$t"
# rmdir aborts an uncommitted transaction and removes a committed one.
trap 'rmdir "$t" 2>/dev/null || true' EXIT
read -r state base < "$t/ctl"
[[ $state == open ]] || { echo "mount-gc: unexpected state $state" >&2; exit 1; }
if [[ $base == 0000000000000000 ]]; then echo "mount-gc: empty storage"; exit 0; fi
snap=$m/@$base

# Mark: everything reachable from the root in the snapshot.
declare -A live=()
todo=("$root")
while ((${#todo[@]})); do
  oid=${todo[-1]}; unset 'todo[-1]'
  [[ -n ${live[$oid]:-} || ! -e $snap/$oid ]] && continue
  live[$oid]=1
  while read -r ref; do
    [[ -n $ref ]] && todo+=("$ref")
  done < <(grep -ao '<oid [0-9a-f]\{16\}>' "$snap/$oid" | tr -d '<>' | cut -c5- || true)
done

# Sweep: every other live object of the snapshot.
garbage=()
for f in "$snap"/*; do
  oid=${f##*/}
  [[ $oid == at || -n ${live[$oid]:-} ]] && continue
  garbage+=("$oid")
done
echo "mount-gc: ${#live[@]} live, ${#garbage[@]} garbage as of $base"
if [[ -n $dry ]]; then printf '%s\n' "${garbage[@]}"; exit 0; fi
((${#garbage[@]})) || exit 0

for oid in "${garbage[@]}"; do rm "$t/$oid"; done
printf 'user mount-gc\ndescription delete %d unreachable objects\n' "${#garbage[@]}" > "$t/info"
if ! echo commit > "$t/ctl" 2>/dev/null; then
  echo "mount-gc: nothing deleted: $(cat "$t/ctl") (another transaction changed that object; run again)" >&2
  exit 4
fi
echo "mount-gc: $(cat "$t/ctl")"
