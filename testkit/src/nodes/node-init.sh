#!/bin/sh
# The first process of a node host (testkit/src/nodes): run by the harness
# as root inside the node's own network, mount and UTS namespaces
# (`ip netns exec NS unshare --mount --uts --propagation private`).
#
# Usage: node-init.sh DISK SIZE HOSTNAME ADDRESS LOGIN_USER SSHD_CONFIG
#
# Gives the node a disk of its own (a tmpfs of SIZE at DISK, seen only in
# this mount namespace) holding a writable layer over /etc, /var,
# /usr/local, /home, /root, /opt and /srv (overlays whose lower layer is
# this machine's), its own /tmp on that disk and its own /run; resets what
# the Tomcat example configures to the packages' own state, as on a fresh
# image; makes the rest of the file system read-only (installed packages are
# there to use, not to change); then starts sshd and stays as the holder of
# the namespaces (`sleep`), so that they outlive a stopped sshd.
set -eu
disk=$1 size=$2 name=$3 address=$4 user=$5 config=$6

mount -t tmpfs -o "size=$size,mode=0755" pyscaler-node-disk "$disk"
for d in etc var usr/local home root opt srv; do
  [ -d "/$d" ] || continue
  mkdir -p "$disk/upper/$d" "$disk/work/$d"
  mount -t overlay pyscaler-node -o "lowerdir=/$d,upperdir=$disk/upper/$d,workdir=$disk/work/$d" "/$d"
done
mkdir -m 1777 "$disk/tmp"
mount --bind "$disk/tmp" /tmp
mount -t tmpfs -o size=64m,mode=0755 pyscaler-node-run /run
mkdir -p /run/sshd

# A fresh image: Tomcat's packaged configuration and no application, none of
# what an earlier configuration of this machine wrote.
if [ -d /usr/share/tomcat10/etc ] && [ -d /etc/tomcat10 ]; then
  for f in /usr/share/tomcat10/etc/*; do
    install -o root -g tomcat -m 0640 "$f" /etc/tomcat10/
  done
fi
if [ -d /var/lib/tomcat10/webapps ]; then
  find /var/lib/tomcat10/webapps -mindepth 1 -maxdepth 1 ! -name ROOT -exec rm -rf {} +
fi
for d in /var/cache/tomcat10 /var/log/tomcat10; do
  if [ -d "$d" ]; then find "$d" -mindepth 1 -maxdepth 1 -exec rm -rf {} +; fi
done
rm -rf /etc/pyscaler /usr/local/sbin/pyscaler-tomcat

hostname "$name"
echo "$name" > /etc/hostname
printf '%s %s\n' "$address" "$name" >> /etc/hosts
home=$(getent passwd "$user" | cut -d: -f6)
if [ -n "$home" ] && [ ! -d "$home" ]; then
  mkdir -p "$home"
  chown "$user:" "$home"
fi

mount -o remount,bind,ro /
/usr/sbin/sshd -D -e -f "$config" &
exec sleep infinity
