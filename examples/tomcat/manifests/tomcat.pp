# examples/tomcat/manifests/tomcat.pp -- step 2 of the tomcat_cluster example
# ("Operating system configuration and provisioning", pyscaler issue 6).
#
# Installs Java and Tomcat (Debian: default-jre-headless + tomcat10) and manages,
# idempotently: the HTTP connector port in server.xml, tomcat-users.xml (one
# manager user) and the Tomcat service -- with systemd, or without it (containers,
# the local demo) through a small control script this manifest installs at
# /usr/local/sbin/pyscaler-tomcat (start|stop|status|restart).
# Uses only Puppet's core types (package, file, exec, service): no Forge module.
#
# HOW TO RUN (as root on the node; Puppet 7):
#   FACTER_tomcat_manager_password='s3cret' FACTER_tomcat_http_port=8080 \
#     puppet apply --detailed-exitcodes --color=false tomcat.pp
# With sudo, pass the variables through sudo, not around it:
#   sudo env FACTER_tomcat_http_port=8080 FACTER_tomcat_manager_password=... puppet apply ...
# To keep the password out of argv (ps) and of the caller's command log, send it
# on stdin instead (this is what the tomcat_cluster example should run):
#   printf '%s\n' "$PASSWORD" | sudo env FACTER_tomcat_http_port=8080 sh -c \
#     'IFS= read -r FACTER_tomcat_manager_password; export FACTER_tomcat_manager_password;
#      exec puppet apply --detailed-exitcodes --color=false /path/to/tomcat.pp'
#
# PARAMETERS: Facter facts, i.e. environment variables FACTER_<name>, read by the
# class pyscaler_tomcat at the bottom of this file (an empty value means "unset"):
#   tomcat_manager_password  REQUIRED. Password of the manager user. Wrapped in
#                            Sensitive: never printed in logs, diffs or reports,
#                            and the file is not backed up in the filebucket.
#   tomcat_manager_user      default "manager"
#   tomcat_manager_roles     default "manager-script" (comma-separated)
#   tomcat_http_port         default 8080 (the HTTP/1.1 connector of server.xml)
#   tomcat_service_provider  default: "systemd" if /run/systemd/system exists on
#                            the node (checked when `puppet apply` compiles), else
#                            "base". Any Puppet service provider name is accepted.
#   tomcat_start_cmd, tomcat_stop_cmd, tomcat_status_cmd, tomcat_restart_cmd
#                            used only with provider "base"; default
#                            "/usr/local/sbin/pyscaler-tomcat start|stop|status|restart"
#   tomcat_start_timeout     seconds the control script waits for the HTTP port
#                            after a start (default 90)
#   tomcat_package, tomcat_java_package, tomcat_service_name, tomcat_user,
#   tomcat_group, tomcat_conf_dir, tomcat_home, tomcat_base
#                            per OS family; defaults for Debian (tested: Debian 12,
#                            tomcat10) and RedHat (untested guesses: tomcat,
#                            java-17-openjdk-headless, /etc/tomcat, ...).
#
# EXIT CODES (--detailed-exitcodes): 0 nothing changed; 2 changes applied;
# 4 failures; 6 changes and failures; 1 the catalog did not compile (e.g. the
# password fact is missing, or a bad port). A second apply with the same facts exits 0
# and does not restart Tomcat (restarts happen only when server.xml's port or
# tomcat-users.xml actually change).
# Note: in some containers Facter prints "Permission denied ... /proc/1/environ"
# errors on stderr while detecting virtualisation; they are harmless (exit code 0/2).

class pyscaler_tomcat (
  String $manager_password = pyscaler_tomcat_fact('tomcat_manager_password', ''),
  String $manager_user     = pyscaler_tomcat_fact('tomcat_manager_user', 'manager'),
  String $manager_roles    = pyscaler_tomcat_fact('tomcat_manager_roles', 'manager-script'),
  Variant[Integer, String] $http_port = pyscaler_tomcat_fact('tomcat_http_port', 8080),
  String $service_provider = pyscaler_tomcat_fact('tomcat_service_provider',
    find_file('/run/systemd/system') ? { undef => 'base', default => 'systemd' }),
  String $ctl              = '/usr/local/sbin/pyscaler-tomcat',
  Variant[Integer, String] $start_timeout = pyscaler_tomcat_fact('tomcat_start_timeout', 90),
) {
  $family_defaults = $facts['os']['family'] ? {
    'RedHat' => {
      'package' => 'tomcat', 'java_package' => 'java-17-openjdk-headless',
      'service_name' => 'tomcat', 'user' => 'tomcat', 'group' => 'tomcat',
      'conf_dir' => '/etc/tomcat', 'home' => '/usr/share/tomcat', 'base' => '/usr/share/tomcat',
    },
    default => {
      'package' => 'tomcat10', 'java_package' => 'default-jre-headless',
      'service_name' => 'tomcat10', 'user' => 'tomcat', 'group' => 'tomcat',
      'conf_dir' => '/etc/tomcat10', 'home' => '/usr/share/tomcat10', 'base' => '/var/lib/tomcat10',
    },
  }
  $package      = pyscaler_tomcat_fact('tomcat_package', $family_defaults['package'])
  $java_package = pyscaler_tomcat_fact('tomcat_java_package', $family_defaults['java_package'])
  $service_name = pyscaler_tomcat_fact('tomcat_service_name', $family_defaults['service_name'])
  $user         = pyscaler_tomcat_fact('tomcat_user', $family_defaults['user'])
  $group        = pyscaler_tomcat_fact('tomcat_group', $family_defaults['group'])
  $conf_dir     = pyscaler_tomcat_fact('tomcat_conf_dir', $family_defaults['conf_dir'])
  $home         = pyscaler_tomcat_fact('tomcat_home', $family_defaults['home'])
  $base         = pyscaler_tomcat_fact('tomcat_base', $family_defaults['base'])

  if $manager_password == '' {
    fail('pyscaler_tomcat: set the tomcat_manager_password fact (FACTER_tomcat_manager_password=...)')
  }
  $port = Integer($http_port)
  if $port < 1 or $port > 65535 {
    fail("pyscaler_tomcat: tomcat_http_port must be 1-65535, got ${http_port}")
  }
  $timeout = Integer($start_timeout)

  # ---- packages -------------------------------------------------------------
  if $facts['os']['family'] == 'Debian' {
    # Fresh cloud images may have empty apt lists: refresh them once, only while
    # Tomcat is not installed yet (so later runs stay change-free).
    exec { 'pyscaler_tomcat apt-get update':
      command => '/usr/bin/apt-get update -q',
      unless  => "/usr/bin/dpkg-query -W -f='\${Status}' ${package} 2>/dev/null | /bin/grep -q 'ok installed'",
      path    => ['/usr/bin', '/bin', '/usr/sbin', '/sbin'],
      timeout => 600,
      before  => Package[$java_package, $package],
    }
  }
  package { $java_package: ensure => installed }
  package { $package:
    ensure  => installed,
    require => Package[$java_package],
  }

  # ---- server.xml: the port of the active HTTP/1.1 connector ------------------
  # Edits only the uncommented line `<Connector port="NNNN" protocol="HTTP/1.1"`
  # (Debian's layout); fails loudly if that line is not found.
  $server_xml = "${conf_dir}/server.xml"
  $connector_re = '^[[:space:]]*<Connector port="[0-9]+" protocol="HTTP/1\.1"'
  $wanted_re    = "^[[:space:]]*<Connector port=\"${port}\" protocol=\"HTTP/1\\.1\""
  exec { 'pyscaler_tomcat connector port':
    command => "sed -E -i 's#^([[:space:]]*<Connector port=\")[0-9]+(\" protocol=\"HTTP/1\\.1\")#\\1${port}\\2#' ${server_xml} && grep -Eq '${wanted_re}' ${server_xml} || { echo 'no active <Connector port=... protocol=\"HTTP/1.1\" line in ${server_xml}' >&2; exit 1; }",
    unless  => "grep -Eq '${wanted_re}' ${server_xml}",
    path    => ['/usr/bin', '/bin', '/usr/sbin', '/sbin'],
    provider => shell,
    require => Package[$package],
  }

  # ---- tomcat-users.xml: the whole file, one manager user ---------------------
  $users_xml = "${conf_dir}/tomcat-users.xml"
  $role_lines = $manager_roles.split(',').map |$r| { "  <role rolename=\"${pyscaler_tomcat_xml_escape($r.strip)}\"/>" }.join("\n")
  $users_content = Sensitive(@("XML"/L))
    <?xml version="1.0" encoding="UTF-8"?>
    <!-- Managed by Puppet (pyscaler examples/tomcat/manifests/tomcat.pp): local edits are overwritten. -->
    <tomcat-users xmlns="http://tomcat.apache.org/xml"
                  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
                  xsi:schemaLocation="http://tomcat.apache.org/xml tomcat-users.xsd"
                  version="1.0">
    ${role_lines}
      <user username="${pyscaler_tomcat_xml_escape($manager_user)}" password="${pyscaler_tomcat_xml_escape($manager_password)}" roles="${pyscaler_tomcat_xml_escape($manager_roles.split(',').map |$r| { $r.strip }.join(','))}"/>
    </tomcat-users>
    | XML
  file { $users_xml:
    ensure    => file,
    owner     => 'root',
    group     => $group,
    mode      => '0640',
    content   => $users_content,
    show_diff => false,
    backup    => false,
    require   => Package[$package],
  }

  # ---- service ------------------------------------------------------------------
  # Control script for hosts without systemd (an EPP template, filled below).
  # Runs catalina.sh start as the tomcat user with the same environment as
  # Debian's systemd unit; status = pid file + live Catalina process; start
  # waits (bounded) until the HTTP port accepts connections.
  $ctl_template = @(SH)
    #!/bin/sh
    # Managed by Puppet (pyscaler examples/tomcat/manifests/tomcat.pp).
    # Usage: pyscaler-tomcat start|stop|status|restart
    # Starts/stops Tomcat without systemd. Exit: 0 ok / running, 1 failure,
    # 3 status: not running, 2 usage.
    set -eu
    SERVICE=<%= $service_name %>
    TC_USER=<%= $user %>
    TC_GROUP=<%= $group %>
    HTTP_PORT=<%= $port %>
    START_TIMEOUT=${START_TIMEOUT:-<%= $timeout %>}
    STOP_TIMEOUT=${STOP_TIMEOUT:-30}
    export CATALINA_HOME=<%= $home %>
    export CATALINA_BASE=<%= $base %>
    export CATALINA_TMPDIR=/tmp
    RUN_DIR=/run/$SERVICE
    export CATALINA_PID="$RUN_DIR/$SERVICE.pid"

    is_running() {
      [ -s "$CATALINA_PID" ] || return 1
      pid=$(cat "$CATALINA_PID")
      kill -0 "$pid" 2>/dev/null || return 1
      tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'org.apache.catalina.startup.Bootstrap'
    }

    port_open() {
      bash -c ": </dev/tcp/127.0.0.1/$HTTP_PORT" 2>/dev/null
    }

    do_start() {
      if is_running; then echo "$SERVICE already running (pid $(cat "$CATALINA_PID"))"; return 0; fi
      install -d -o "$TC_USER" -g "$TC_GROUP" -m 0755 "$RUN_DIR"
      rm -f "$CATALINA_PID"
      JAVA_OPTS="-Djava.awt.headless=true"
      set +u   # Debian's helper files expect unset variables to be empty
      # shellcheck source=/dev/null
      if [ -r /etc/default/$SERVICE ]; then . /etc/default/$SERVICE; fi
      # shellcheck source=/dev/null
      if [ -r /usr/libexec/$SERVICE/tomcat-locate-java.sh ]; then . /usr/libexec/$SERVICE/tomcat-locate-java.sh; fi
      set -u
      export JAVA_OPTS
      if [ -n "${JAVA_HOME:-}" ]; then export JAVA_HOME; fi
      home=$(getent passwd "$TC_USER" | cut -d: -f6)
      cd "$CATALINA_BASE"
      HOME=${home:-$CATALINA_BASE} setsid setpriv --reuid="$TC_USER" --regid="$TC_GROUP" --init-groups \
        "$CATALINA_HOME/bin/catalina.sh" start </dev/null >/dev/null 2>&1
      waited=0
      while :; do
        if [ -s "$CATALINA_PID" ] && ! kill -0 "$(cat "$CATALINA_PID")" 2>/dev/null; then
          echo "$SERVICE died while starting; see $CATALINA_BASE/logs/catalina.out" >&2; exit 1
        fi
        if is_running && port_open; then
          echo "$SERVICE started (pid $(cat "$CATALINA_PID"), port $HTTP_PORT)"; return 0
        fi
        if [ "$waited" -ge "$START_TIMEOUT" ]; then
          echo "$SERVICE: port $HTTP_PORT not open after ${START_TIMEOUT}s; see $CATALINA_BASE/logs/catalina.out" >&2; exit 1
        fi
        sleep 1; waited=$((waited + 1))
      done
    }

    do_stop() {
      if ! is_running; then rm -f "$CATALINA_PID"; echo "$SERVICE not running"; return 0; fi
      pid=$(cat "$CATALINA_PID")
      kill -TERM "$pid"
      waited=0
      while kill -0 "$pid" 2>/dev/null; do
        if [ "$waited" -ge "$STOP_TIMEOUT" ]; then kill -KILL "$pid" 2>/dev/null || true; sleep 1; break; fi
        sleep 1; waited=$((waited + 1))
      done
      rm -f "$CATALINA_PID"
      echo "$SERVICE stopped (pid $pid)"
    }

    case "${1:-}" in
      start) do_start ;;
      stop) do_stop ;;
      restart) do_stop; do_start ;;
      status)
        if is_running; then echo "$SERVICE running (pid $(cat "$CATALINA_PID"))"; exit 0; fi
        echo "$SERVICE not running"; exit 3 ;;
      *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
    esac
    | SH

  # The control script used by provider "base" (and by scripts/jvm-options.sh).
  file { $ctl:
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0755',
    content => inline_epp($ctl_template, {
      'service_name' => $service_name, 'user' => $user, 'group' => $group,
      'home' => $home, 'base' => $base, 'port' => $port, 'timeout' => $timeout,
    }),
  }

  if $service_provider == 'base' {
    $cmds = {
      'start'   => pyscaler_tomcat_fact('tomcat_start_cmd', "${ctl} start"),
      'stop'    => pyscaler_tomcat_fact('tomcat_stop_cmd', "${ctl} stop"),
      'status'  => pyscaler_tomcat_fact('tomcat_status_cmd', "${ctl} status"),
      'restart' => pyscaler_tomcat_fact('tomcat_restart_cmd', "${ctl} restart"),
    }
    service { $service_name:
      ensure     => running,
      provider   => 'base',
      start      => $cmds['start'],
      stop       => $cmds['stop'],
      status     => $cmds['status'],
      restart    => $cmds['restart'],
      hasstatus  => true,
      hasrestart => true,
      require    => [Package[$package], File[$ctl]],
      subscribe  => [Exec['pyscaler_tomcat connector port'], File[$users_xml]],
    }
  } else {
    service { $service_name:
      ensure    => running,
      enable    => true,
      provider  => $service_provider,
      require   => Package[$package],
      subscribe => [Exec['pyscaler_tomcat connector port'], File[$users_xml]],
    }
  }
}

# Fact lookup with a default; an unset or empty fact gives the default.
function pyscaler_tomcat_fact(String $name, $default) {
  $value = $facts[$name]
  ($value =~ Undef or $value == '') ? { true => $default, default => $value }
}

# XML attribute escaping (core Puppet has no such function).
function pyscaler_tomcat_xml_escape(String $s) {
  $s.regsubst('&', '&amp;', 'G').regsubst('<', '&lt;', 'G').regsubst('>', '&gt;', 'G')
    .regsubst('"', '&quot;', 'G').regsubst("'", '&apos;', 'G')
}

include pyscaler_tomcat
