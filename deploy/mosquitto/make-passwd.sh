#!/usr/bin/env sh
# Create a Mosquitto password file from "user:password" lines on standard input.
#
#   printf '%s\n' 'vigil-monitor:...' 'ecg-0042:...' | deploy/mosquitto/make-passwd.sh /etc/mosquitto/vigil.passwd
#
# Passwords never appear on a command line (ps): the plain file is written with umask 077 and hashed
# in place by `mosquitto_passwd -U`. An existing file is replaced. Never commit the result.
set -eu
out=${1:?usage: make-passwd.sh PASSWORD_FILE < user:password lines}
mosquitto_passwd=$(command -v mosquitto_passwd || echo /usr/bin/mosquitto_passwd)
[ -x "$mosquitto_passwd" ] || { echo "make-passwd.sh: mosquitto_passwd not found" >&2; exit 1; }
umask 077
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
n=0
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in ''|'#'*) continue ;; esac
  case "$line" in *:*) ;; *) echo "make-passwd.sh: expected user:password, got a line without ':'" >&2; exit 1 ;; esac
  printf '%s\n' "$line" >> "$tmp"
  n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "make-passwd.sh: no users on standard input" >&2; exit 1; }
"$mosquitto_passwd" -U "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "make-passwd.sh: $n users written to $out (hashed)" >&2
