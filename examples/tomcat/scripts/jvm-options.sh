#!/bin/sh
# examples/tomcat/scripts/jvm-options.sh -- step 3 of the tomcat_cluster example
# ("Tomcat configuration"): sets Tomcat's JVM options and restarts Tomcat only
# when they changed. Run as root on the node.
#
# Usage: jvm-options.sh --heap SIZE [--jmx-port PORT|none] [--jmx-host ADDR]
#                       [--setenv FILE] [--no-restart]
#   --heap SIZE      maximum heap, e.g. 512m, 1g, 2048m  (-> -XmxSIZE)       (required)
#   --jmx-port PORT  JMX remote port (1-65535), or "none" (default) for no JMX
#   --jmx-host ADDR  address JMX binds and announces (default 127.0.0.1). JMX is
#                    set up WITHOUT authentication or TLS: keep it on loopback or
#                    behind a firewall / SSH tunnel.
#   --setenv FILE    file to edit (default $CATALINA_BASE/bin/setenv.sh with
#                    CATALINA_BASE=/var/lib/tomcat10: Debian's catalina.sh reads
#                    $CATALINA_BASE/bin/setenv.sh first, and tomcat10 ships none)
#   --no-restart     only write the file
# Environment:
#   TOMCAT_RESTART_CMD  command run (with sh -c) to restart Tomcat after a change.
#                       Default: "systemctl restart tomcat10" when systemd runs,
#                       else "/usr/local/sbin/pyscaler-tomcat restart" (installed
#                       by manifests/tomcat.pp).
#   CATALINA_BASE       default /var/lib/tomcat10
# The options live in a marked block of setenv.sh (anything else in the file is
# kept) and go into CATALINA_OPTS, which only the server JVM uses.
# Prints one line: "jvm-options: unchanged ..." or "jvm-options: changed ...".
# Exit: 0 ok (changed or unchanged), 1 restart failed (setenv.sh is then put
#       back as it was, so a rerun retries) or file not writable,
#       2 bad arguments.
set -eu

PROG=jvm-options
usage() {
  echo "$PROG: $1" >&2
  echo "usage: jvm-options.sh --heap SIZE [--jmx-port PORT|none] [--jmx-host ADDR] [--setenv FILE] [--no-restart]" >&2
  exit 2
}

heap=""
jmx_port="none"
jmx_host="127.0.0.1"
catalina_base=${CATALINA_BASE:-/var/lib/tomcat10}
setenv="$catalina_base/bin/setenv.sh"
restart=yes

while [ $# -gt 0 ]; do
  case "$1" in
    --heap|--jmx-port|--jmx-host|--setenv)
      [ $# -ge 2 ] || usage "$1 needs a value"
      case "$1" in
        --heap) heap=$2 ;;
        --jmx-port) jmx_port=$2 ;;
        --jmx-host) jmx_host=$2 ;;
        --setenv) setenv=$2 ;;
      esac
      shift 2 ;;
    --heap=*) heap=${1#*=}; shift ;;
    --jmx-port=*) jmx_port=${1#*=}; shift ;;
    --jmx-host=*) jmx_host=${1#*=}; shift ;;
    --setenv=*) setenv=${1#*=}; shift ;;
    --no-restart) restart=no; shift ;;
    -h|--help) usage "help" ;;
    *) usage "unknown argument '$1'" ;;
  esac
done

[ -n "$heap" ] || usage "--heap is required (e.g. --heap 512m)"
case "$heap" in
  *[!0-9kKmMgG]*|[!0-9]*|*[kKmMgG]?*) usage "bad --heap '$heap' (expected digits with optional k/m/g suffix, e.g. 512m)" ;;
esac
case "$jmx_port" in
  none) ;;
  ''|*[!0-9]*) usage "bad --jmx-port '$jmx_port' (expected 1-65535 or none)" ;;
  *) if [ "$jmx_port" -lt 1 ] || [ "$jmx_port" -gt 65535 ]; then
       usage "bad --jmx-port '$jmx_port' (expected 1-65535 or none)"
     fi ;;
esac
case "$jmx_host" in
  ''|*[!0-9A-Za-z.:-]*) usage "bad --jmx-host '$jmx_host'" ;;
esac

opts="-Xmx$heap"
summary="heap=$heap"
if [ "$jmx_port" != none ]; then
  opts="$opts -Dcom.sun.management.jmxremote -Dcom.sun.management.jmxremote.port=$jmx_port"
  opts="$opts -Dcom.sun.management.jmxremote.rmi.port=$jmx_port"
  opts="$opts -Dcom.sun.management.jmxremote.host=$jmx_host -Djava.rmi.server.hostname=$jmx_host"
  opts="$opts -Dcom.sun.management.jmxremote.authenticate=false -Dcom.sun.management.jmxremote.ssl=false"
  summary="$summary jmx=$jmx_host:$jmx_port"
else
  summary="$summary jmx=off"
fi

begin="# BEGIN pyscaler jvm-options (managed by examples/tomcat/scripts/jvm-options.sh)"
end="# END pyscaler jvm-options"

dir=$(dirname "$setenv")
mkdir -p "$dir" || { echo "$PROG: cannot create $dir" >&2; exit 1; }
tmp=$(mktemp "$dir/.setenv.sh.XXXXXX") || { echo "$PROG: cannot write in $dir" >&2; exit 1; }
trap 'rm -f "$tmp"' EXIT INT TERM

# Everything outside our block is kept; our block goes at the end.
if [ -f "$setenv" ]; then
  awk -v b="$begin" -v e="$end" '$0 == b {skip=1; next} $0 == e {skip=0; next} !skip' "$setenv" > "$tmp"
else
  printf '#!/bin/sh\n# Sourced by catalina.sh (Tomcat) at start.\n' > "$tmp"
fi
{
  echo "$begin"
  echo "CATALINA_OPTS=\"\${CATALINA_OPTS:-} $opts\""
  echo "$end"
} >> "$tmp"
chmod 0644 "$tmp"

if [ -f "$setenv" ] && cmp -s "$tmp" "$setenv"; then
  echo "$PROG: unchanged ($summary) in $setenv; no restart"
  exit 0
fi
# Keep the previous file until Tomcat restarted: if the restart fails it is put
# back, so that a rerun sees the change again and retries the restart.
backup=""
if [ -f "$setenv" ]; then
  backup=$(mktemp "$dir/.setenv.sh.old.XXXXXX")
  cp -p "$setenv" "$backup"
fi
trap 'rm -f "$tmp" ${backup:+"$backup"}' EXIT INT TERM
mv -f "$tmp" "$setenv"

if [ "$restart" = no ]; then
  echo "$PROG: changed ($summary) in $setenv; restart skipped (--no-restart)"
  exit 0
fi

if [ -n "${TOMCAT_RESTART_CMD:-}" ]; then
  cmd=$TOMCAT_RESTART_CMD
elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  cmd="systemctl restart tomcat10"
elif [ -x /usr/local/sbin/pyscaler-tomcat ]; then
  cmd="/usr/local/sbin/pyscaler-tomcat restart"
else
  echo "$PROG: changed ($summary) in $setenv, but no way to restart Tomcat: set TOMCAT_RESTART_CMD or apply manifests/tomcat.pp" >&2
  exit 1
fi
if ! out=$(sh -c "$cmd" 2>&1); then
  if [ -n "$backup" ]; then mv -f "$backup" "$setenv"; else rm -f "$setenv"; fi
  echo "$PROG: restart FAILED ($cmd), so $setenv was put back as it was (a rerun retries): $out" | tr '\n' ' ' >&2
  echo >&2
  exit 1
fi
echo "$PROG: changed ($summary) in $setenv; restarted Tomcat ($cmd)"
