#!/usr/bin/env bash
# keepalived's notify hook for the lab: one line per VRRP transition.
#   notify.sh ROUTER LOGFILE TYPE NAME STATE PRIORITY   (keepalived appends the last four)
echo "$(date +%T.%N) $1 $5" >>"$2"
