#!/usr/bin/env bash
# Runs an MPI program across two simulated hosts on this machine, as a two-node mpirun would:
#
#   test/two_hosts.sh [--ranks-per-host N] [--timeout S] [--min-traffic BYTES] [--keep] \
#                     -- [MPIRUN OPTIONS] PROGRAM [ARGS...]
#
# Each host is a network + UTS + mount namespace (its own host name, its own /etc/hosts that names both
# hosts, its own interface `dgnet0`); the two are joined by a veth pair (10.213.7.1/24 <-> .2/24). mpirun
# runs on host A with a hostfile naming both hosts and starts the remote orted through an rsh agent that
# enters host B's namespaces instead of ssh-ing. MPI traffic goes over TCP (dgnet0) between the hosts and
# over shared memory (vader) within one. The filesystem is shared, so PROGRAM and its outputs are the same
# paths on both hosts, as a shared checkpoint folder would be.
#
# Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN), util-linux (unshare, nsenter), iproute2 (ip) and Open MPI.
# --min-traffic fails the run (exit 1) when fewer bytes than that crossed the cable: the proof that the
# ranks really were on two hosts. --keep keeps the temporary folder (hostfile, agent) for a look.
# Exit status: mpirun's; 77 when the kernel refuses the namespaces or the veth pair (reason printed);
# 124 when the job ran past --timeout; 2 on a usage or setup error. Everything it creates (namespaces,
# veth pair, processes, temporary files) is gone when it exits, also on failure, Ctrl-C or SIGTERM. Killed
# outright (SIGKILL), its namespace holders still end with it (they read a pipe that it holds open), the
# job ends at --timeout at the latest, and the next run removes the folder it left.
set -euo pipefail

per_host=2
timeout_s=90
min_traffic=0
keep=0
usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while (($#)); do
  case $1 in
    --ranks-per-host) per_host=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --min-traffic) min_traffic=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) echo "two_hosts: unknown option $1" >&2; usage ;;
  esac
done
(($#)) || usage

say() { echo "two_hosts: $*" >&2; }
skip() { say "SKIP: $*"; exit 77; }
for tool in unshare nsenter mount ip mpirun timeout mkfifo; do
  command -v "$tool" >/dev/null || { say "missing '$tool' (scripts/setup.sh installs util-linux, mount, iproute2, openmpi-bin)"; exit 2; }
done

host_a=ditgen-host-a
host_b=ditgen-host-b
ip_a=10.213.7.1
ip_b=10.213.7.2
ifname=dgnet0

# Our folder (hostfile, agent, Open MPI's session folders and shared-memory segments). Folders of runs that
# were killed outright (no trap runs on SIGKILL) are removed here, once their script is gone.
tmp=${TMPDIR:-/tmp}
for d in "$tmp"/two_hosts.*/; do
  [[ -f $d/pid ]] && ! kill -0 "$(<"$d/pid")" 2>/dev/null && rm -rf "$d"
done
dir=$(mktemp -d "$tmp/two_hosts.XXXXXX")
echo $$ >"$dir/pid"
holders=()
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  [[ -n ${job:-} ]] && kill -TERM "$job" 2>/dev/null
  # Whatever is still inside our namespaces (mpirun, an orted, a rank, the holders): end it by its id.
  # (Compared with -ef, which needs no fork per process: the machine may be busy.)
  local victims=() p h
  for p in /proc/[0-9]*; do
    for h in "${holders[@]}"; do
      [[ $p/ns/net -ef /proc/$h/ns/net ]] && victims+=("${p#/proc/}") && break
    done
  done
  if ((${#victims[@]})); then
    kill -TERM "${victims[@]}" 2>/dev/null
    local alive stat
    for _ in $(seq 20); do   # up to 2 s for them to go (zombies count as gone)
      alive=0
      for p in "${victims[@]}"; do
        read -r stat 2>/dev/null <"/proc/$p/stat" || continue
        stat=${stat##*) }
        [[ ${stat%% *} != Z ]] && alive=1 && break
      done
      ((alive)) || break
      sleep 0.1
    done
    kill -KILL "${victims[@]}" 2>/dev/null
  fi
  [[ -n ${life:-} ]] && exec {life}>&-   # (the holders also end when this pipe closes)
  for h in "${holders[@]}"; do wait "$h" 2>/dev/null; done
  if ((keep)); then say "kept $dir"; else rm -rf "$dir"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The kernel must let us make the namespaces at all (containers without CAP_SYS_ADMIN do not).
if ! err=$(unshare --net --uts --mount -- true 2>&1); then
  skip "cannot create network/UTS/mount namespaces here (${err:-unshare failed}); needs root with CAP_SYS_ADMIN"
fi

printf '127.0.0.1 localhost\n%s %s\n%s %s\n' "$ip_a" "$host_a" "$ip_b" "$host_b" >"$dir/hosts"
printf '%s slots=%s\n%s slots=%s\n' "$host_a" "$per_host" "$host_b" "$per_host" >"$dir/hostfile"
mkfifo "$dir/life"

# One holder process per host: it creates the namespaces, names the host, gives it its /etc/hosts (a
# bind mount private to its mount namespace), says it is ready, and then lives as long as the pipe.
start_host() {  # NAME
  unshare --net --uts --mount --propagation private -- sh -c '
      hostname "$1" && mount --bind "$2/hosts" /etc/hosts && ip link set lo up && touch "$2/$1.ready" &&
      exec cat >/dev/null' holder "$1" "$dir" <"$dir/life" 2>"$dir/$1.err" &
  holders+=($!)
}
start_host "$host_a"
start_host "$host_b"
exec {life}>"$dir/life"
pid_a=${holders[0]}
pid_b=${holders[1]}
for ((i = 0; i < 600; i++)); do   # a busy machine may take a while; a refusal ends a holder at once
  [[ -e $dir/$host_a.ready && -e $dir/$host_b.ready ]] && break
  kill -0 "$pid_a" "$pid_b" 2>/dev/null ||
    skip "the kernel refused to set up a namespace host: $(cat "$dir"/*.err 2>/dev/null | tr '\n' ' ')"
  sleep 0.05
done
[[ -e $dir/$host_a.ready && -e $dir/$host_b.ready ]] || { say "the namespace hosts were not ready after 30 s"; exit 2; }

# The cable: a veth pair made inside host A with its peer moved into host B (the root namespace is never
# touched; the pair disappears with the namespaces).
in_a() { nsenter --target "$pid_a" --net --uts --mount -- "$@"; }
in_b() { nsenter --target "$pid_b" --net --uts --mount -- "$@"; }
if ! err=$(in_a ip link add "$ifname" type veth peer name "$ifname" netns "$pid_b" 2>&1); then
  skip "the kernel refused a veth pair between the namespaces ($err)"
fi
in_a ip addr add "$ip_a/24" dev "$ifname"
in_b ip addr add "$ip_b/24" dev "$ifname"
in_a ip link set "$ifname" up
in_b ip link set "$ifname" up

# The rsh agent mpirun calls as `agent HOST COMMAND...` (as it would call ssh): it enters that host's
# namespaces and runs the command with a fresh environment, as a login over ssh would.
cat >"$dir/rsh-agent" <<EOF
#!/bin/sh
host=\$1; shift
case \$host in
  $host_a|$ip_a) pid=$pid_a ;;
  $host_b|$ip_b) pid=$pid_b ;;
  *) echo "rsh-agent: unknown host \$host" >&2; exit 255 ;;
esac
exec nsenter --target "\$pid" --net --uts --mount -- \\
     env -i PATH="$PATH" HOME="\$HOME" SHELL=/bin/sh LANG=C.UTF-8 ${LD_LIBRARY_PATH:+LD_LIBRARY_PATH="$LD_LIBRARY_PATH"} \\
     /bin/sh -c "\$*"
EOF
chmod +x "$dir/rsh-agent"

say "$host_a ($ip_a) and $host_b ($ip_b), $per_host ranks each, over $ifname; timeout ${timeout_s}s"
# mpirun on host A. The flags are the ones a real two-node launch needs: the hostfile, the interface for
# the out-of-band channel and for the TCP transport, ob1 + self/vader/tcp (not UCX, which would pick its
# own transports); --allow-run-as-root and --oversubscribe for CI; session folders and shared-memory
# segments in our folder, so that nothing is left behind.
# (In the background and waited for, so that a signal to this script is handled at once.)
SHELL=/bin/sh OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
timeout --kill-after=5 "$timeout_s" \
  nsenter --target "$pid_a" --net --uts --mount --wd="$PWD" -- \
  mpirun --allow-run-as-root --oversubscribe --bind-to none \
         --hostfile "$dir/hostfile" -np $((2 * per_host)) \
         --mca plm_rsh_agent "$dir/rsh-agent" \
         --mca pml ob1 --mca btl self,vader,tcp \
         --mca btl_tcp_if_include "$ifname" --mca oob_tcp_if_include "$ifname" \
         --mca orte_tmpdir_base "$dir" --mca btl_vader_backing_directory "$dir" \
         "$@" {life}>&- &
job=$!
rc=0
wait "$job" || rc=$?
job=
((rc == 124 || rc == 137)) && say "the job ran past ${timeout_s}s and was ended"
# Proof that the hosts talked over the cable (bytes through host A's end of the veth pair).
rx=0 tx=0
read -r rx tx < <(in_a awk -v i="$ifname" '{sub(/:/, " ")} $1 == i {print $2, $10}' /proc/net/dev) || true
say "$ifname on $host_a: $tx bytes sent, $rx received"
if ((rc == 0 && rx + tx < min_traffic)); then
  say "FAIL: only $((rx + tx)) bytes crossed between the hosts (expected at least $min_traffic): did all ranks run on one host?"
  rc=1
fi
exit "$rc"
