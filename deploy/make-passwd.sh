#!/bin/sh
# Create or update the mosquitto password file for brainharmonic-rt.
#
#   sudo deploy/make-passwd.sh /etc/mosquitto/passwd
#
# Users (their rights are in brainharmonic.acl):
#   brainharmonic  the service         -> put its password in /etc/brainharmonic/env as
#                                         BRAINHARMONIC_CONTROL__PASSWORD=...
#   controller     phone / desk / app  -> sends commands, reads everything
#   visuals        visuals programs    -> reads telemetry and status only
#
# Passwords are asked for interactively; for automation set BH_PASSWORD_<USER>
# (e.g. BH_PASSWORD_VISUALS). A user whose password is given as "-" is skipped.
set -eu

file="${1:?usage: make-passwd.sh PASSWORD_FILE}"
command -v mosquitto_passwd >/dev/null || { echo "mosquitto_passwd not found; install mosquitto." >&2; exit 1; }
[ -e "$file" ] || { : > "$file"; }
chmod 600 "$file"

for user in brainharmonic controller visuals; do
    var="BH_PASSWORD_$(echo "$user" | tr '[:lower:]' '[:upper:]')"
    eval "pw=\${$var:-}"
    if [ "$pw" = "-" ]; then
        continue
    elif [ -n "$pw" ]; then
        mosquitto_passwd -b "$file" "$user" "$pw"
    else
        echo "Password for MQTT user '$user':"
        mosquitto_passwd "$file" "$user"
    fi
done

# mosquitto drops root and reads the file as the 'mosquitto' user.
if id mosquitto >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    chown mosquitto: "$file"
fi
echo "Wrote $file; restart mosquitto to load it (sudo systemctl restart mosquitto)."
