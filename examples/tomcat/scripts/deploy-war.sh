#!/bin/sh
# examples/tomcat/scripts/deploy-war.sh -- step 4 of the tomcat_cluster example
# ("Application deployment"): installs a WAR into Tomcat and waits until the
# application answers. Run as root (or the tomcat user) on the node.
#
# Usage: deploy-war.sh [--port N] [--timeout SECONDS] [--webapps DIR] WAR APP [EXPECTED_TEXT]
#   WAR            path of the .war file on this node
#   APP            application name / context path: letters, digits, . _ - (ROOT = /)
#   EXPECTED_TEXT  text the page body must contain (default: any body; the
#                  example passes "pyscaler demo app")
#   --port N       Tomcat's HTTP port on 127.0.0.1 (default 8080)
#   --timeout S    how long to wait for the answer (default 60)
#   --webapps DIR  Tomcat's appBase (default /var/lib/tomcat10/webapps)
# The WAR is copied to DIR/.APP.war.XXXXXX and renamed to DIR/APP.war (atomic:
# Tomcat's auto-deployer never sees a half-written WAR). If DIR/APP.war is
# already identical the copy is skipped ("unchanged") and only the check runs.
# When it replaces an older WAR, it also waits until Tomcat has re-expanded it.
# Then polls http://127.0.0.1:PORT/APP/ once a second until it answers 200 with
# EXPECTED_TEXT in the body.
# HTTP client: curl, else wget, else bash's /dev/tcp (a fresh debian:12 image
# has neither curl nor wget; Debian's cloud images have both; bash and
# coreutils' timeout are always there). Force one with DEPLOY_WAR_HTTP=curl|wget|bash.
# Prints "deploy-war: deployed|unchanged APP ... answered 200 after Ns".
# Exit: 0 ok, 1 timeout (message gives the last HTTP status, 000 = no answer),
#       2 bad arguments, 3 cannot copy the WAR.
set -eu

PROG=deploy-war
usage() {
  echo "$PROG: $1" >&2
  echo "usage: deploy-war.sh [--port N] [--timeout SECONDS] [--webapps DIR] WAR APP [EXPECTED_TEXT]" >&2
  exit 2
}

port=8080
timeout=60
webapps=/var/lib/tomcat10/webapps
while [ $# -gt 0 ]; do
  case "$1" in
    --port|--timeout|--webapps)
      [ $# -ge 2 ] || usage "$1 needs a value"
      case "$1" in
        --port) port=$2 ;;
        --timeout) timeout=$2 ;;
        --webapps) webapps=$2 ;;
      esac
      shift 2 ;;
    --port=*) port=${1#*=}; shift ;;
    --timeout=*) timeout=${1#*=}; shift ;;
    --webapps=*) webapps=${1#*=}; shift ;;
    --) shift; break ;;
    -h|--help) usage "help" ;;
    -*) usage "unknown option '$1'" ;;
    *) break ;;
  esac
done
if [ $# -lt 2 ] || [ $# -gt 3 ]; then usage "expected WAR APP [EXPECTED_TEXT]"; fi
war=$1
app=$2
expected=${3:-}

case "$port" in ''|*[!0-9]*) usage "bad --port '$port'" ;; esac
if [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then usage "bad --port '$port'"; fi
case "$timeout" in ''|*[!0-9]*) usage "bad --timeout '$timeout'" ;; esac
case "$app" in
  ''|.*|*[!A-Za-z0-9._-]*) usage "bad APP '$app' (letters, digits, . _ -; not starting with .)" ;;
esac
if [ ! -f "$war" ] || [ ! -r "$war" ]; then usage "WAR '$war' is not a readable file"; fi
[ -d "$webapps" ] || usage "webapps directory '$webapps' does not exist (is Tomcat installed?)"

if [ "$app" = ROOT ]; then path=/; else path="/$app/"; fi
url="http://127.0.0.1:$port$path"

# ---- install the WAR atomically ------------------------------------------------
target="$webapps/$app.war"
exploded="$webapps/$app"
stale_possible=no
if [ -f "$target" ] && cmp -s "$war" "$target"; then
  action=unchanged
else
  # When an older version is deployed, Tomcat replaces its exploded directory
  # (within ~10 s); until then the old version still answers, so success is
  # only accepted once that directory is gone or new.
  if [ -f "$target" ] && [ -d "$exploded" ]; then
    stale_possible=yes
  fi
  tmp=$(mktemp "$webapps/.$app.war.XXXXXX") || { echo "$PROG: cannot write in $webapps" >&2; exit 3; }
  trap 'rm -f "$tmp"' EXIT INT TERM
  if ! { cp "$war" "$tmp" && chmod 0644 "$tmp" && mv -f "$tmp" "$target"; }; then
    echo "$PROG: cannot copy $war to $target" >&2; exit 3
  fi
  trap - EXIT INT TERM
  action=deployed
fi

# ---- wait for the answer ------------------------------------------------------------
client=${DEPLOY_WAR_HTTP:-}
if [ -z "$client" ]; then
  if command -v curl >/dev/null 2>&1; then client=curl
  elif command -v wget >/dev/null 2>&1; then client=wget
  else client=bash
  fi
fi
body=$(mktemp)
hdr=$(mktemp)
trap 'rm -f "$body" "$hdr"' EXIT INT TERM

# redeployed: true unless the old version's exploded directory is still there
# (i.e. it exists and was last modified before the new WAR was written).
redeployed() {
  [ "$stale_possible" = no ] && return 0
  [ -d "$exploded" ] || return 0
  [ -n "$(find "$exploded" -maxdepth 0 -newer "$target")" ]
}

# fetch: writes the body to $body, prints the HTTP status (000 = no answer).
fetch() {
  : > "$body"
  case "$client" in
    curl)
      curl -s -m 5 -o "$body" -w '%{http_code}' "$url" 2>/dev/null || true ;;
    wget)
      wget -q -S -T 5 -t 1 -O "$body" "$url" 2>"$hdr" || true
      awk '$1 ~ /^HTTP\// {s=$2} END {print (s == "" ? "000" : s)}' "$hdr" ;;
    bash)
      # shellcheck disable=SC2016 # expanded by the inner bash
      timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n" "$2" "$1" >&3
        cat <&3' bash "$port" "$path" 2>/dev/null | tr -d '\r' > "$hdr" || true
      awk 'b {print} /^$/ {b=1}' "$hdr" > "$body"
      awk 'NR == 1 {s = ($1 ~ /^HTTP\//) ? $2 : ""} END {print (s == "" ? "000" : s)}' "$hdr" ;;
    *) usage "bad DEPLOY_WAR_HTTP '$client' (curl, wget or bash)" ;;
  esac
}

start=$(date +%s)
status=000
while :; do
  status=$(fetch)
  now=$(date +%s)
  if [ "$status" = 200 ] && redeployed && { [ -z "$expected" ] || grep -qF -- "$expected" "$body"; }; then
    echo "$PROG: $action $app ($target); $url answered 200 after $((now - start))s"
    exit 0
  fi
  if [ $((now - start)) -ge "$timeout" ]; then
    if [ "$status" = 200 ] && ! redeployed; then
      echo "$PROG: timeout after ${timeout}s: Tomcat has not redeployed $app yet (still the old $exploded; last HTTP status 200)" >&2
    elif [ "$status" = 200 ]; then
      echo "$PROG: timeout after ${timeout}s: $url answers 200 but the body lacks '$expected' (last HTTP status 200)" >&2
    else
      echo "$PROG: timeout after ${timeout}s waiting for $url (last HTTP status $status)" >&2
    fi
    exit 1
  fi
  sleep 1
done
