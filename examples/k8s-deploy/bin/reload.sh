#!/bin/sh
# reload_cmd of the k8s-deploy example: runs a rendered kubectl script with
# its output in a timestamped log, LOG_DIR/NAME/YYYYmmdd_HHMMSS.log, and
# deletes that script's logs older than NAP_DEPLOY_LOG_MINUTES (default 1440).
# Unlike the original, it runs in the foreground, so nap sees its exit status.
set -u
script=$1
name=$(basename "$script")
log_dir=${NAP_DEPLOY_LOG_DIR:-/var/lib/nap-deploy/logs}/$name
keep=${NAP_DEPLOY_LOG_MINUTES:-1440}
mkdir -p "$log_dir"
find "$log_dir" -type f -name '*.log' -mmin +"$keep" -delete
log=$log_dir/$(date +%Y%m%d_%H%M%S).log
{
  echo "[+] $(date '+%F %T') running $script"
  grep -v '^$' "$script"
  echo "[-] output"
  sh -x "$script"
  status=$?
  echo "[-] exit code $status"
  exit $status
} >>"$log" 2>&1
