#!/bin/sh
# examples/tomcat/scripts/cluster-members.sh -- step 5 of the tomcat_cluster
# example ("Cluster update"): rewrites this node's list of cluster members.
#
# Usage: cluster-members.sh [--file PATH] MEMBER...
#   MEMBER       "name=host" (e.g. node-1=10.0.1.5) or a plain host; no spaces.
#   --file PATH  the list (default $CLUSTER_MEMBERS_FILE, else
#                /etc/pyscaler/cluster-members); its directory is created.
# Writes one member per line, sorted (LC_ALL=C) and de-duplicated, atomically
# (temporary file in the same directory, then mv), mode 0644.
# Prints one line: "cluster-members: changed PATH (N members)" or
# "cluster-members: unchanged PATH (N members)".
# Exit: 0 ok (changed or unchanged), 1 cannot write, 2 bad arguments.
set -eu

PROG=cluster-members
usage() {
  echo "$PROG: $1" >&2
  echo "usage: cluster-members.sh [--file PATH] MEMBER... (MEMBER = name=host or host)" >&2
  exit 2
}

file=${CLUSTER_MEMBERS_FILE:-/etc/pyscaler/cluster-members}
case "${1:-}" in
  --file) [ $# -ge 2 ] || usage "--file needs a value"; file=$2; shift 2 ;;
  --file=*) file=${1#*=}; shift ;;
  -h|--help) usage "help" ;;
esac
[ $# -gt 0 ] || usage "no members given"
[ -n "$file" ] || usage "empty --file"

for m in "$@"; do
  case "$m" in
    ''|-*) usage "bad member '$m'" ;;
    *[!A-Za-z0-9.:_=-]*) usage "bad member '$m' (allowed: letters, digits, . : _ - and one =)" ;;
    *=*=*|=*|*=) usage "bad member '$m' (expected name=host or host)" ;;
  esac
done

dir=$(dirname "$file")
mkdir -p "$dir" || { echo "$PROG: cannot create $dir" >&2; exit 1; }
tmp=$(mktemp "$dir/.cluster-members.XXXXXX") || { echo "$PROG: cannot write in $dir" >&2; exit 1; }
trap 'rm -f "$tmp"' EXIT INT TERM

printf '%s\n' "$@" | LC_ALL=C sort -u > "$tmp"
chmod 0644 "$tmp"
n=$(wc -l < "$tmp" | tr -d ' ')

if [ -f "$file" ] && cmp -s "$tmp" "$file"; then
  echo "$PROG: unchanged $file ($n members)"
  exit 0
fi
mv -f "$tmp" "$file"
trap - EXIT INT TERM
echo "$PROG: changed $file ($n members)"
