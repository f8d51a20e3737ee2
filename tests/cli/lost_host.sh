# Two ranks on two hosts, one of which is cut off from the network: the
# hosts are network namespaces joined by a bridge, each rank started in its
# own by OpenMPI's launch agent (`ip netns exec`), TCP between them. Without
# a fault the job trains as one rank does. Cutting one host's link during
# start-up, during a collective and during a checkpoint write, the whole job
# ends within parallel.timeout_s plus OpenMPI's keep-alive (set as
# scripts/slurm/longtrain.sbatch sets it, shorter here): the reachable
# rank's watchdog names the operation, the cut-off rank leaves on its own,
# and no process of the job is left. Namespaces need root: skipped (exit
# 77) with one line where they are unavailable.
source "$(dirname "$0")/lib.sh"
dir="$LT_TEST_DIR/cli_lost_host"
rm -rf "$dir" && mkdir -p "$dir"
tag=$$
ns_a=lt_a_$tag ns_b=lt_b_$tag bridge=ltbr$tag
if ! ip netns add "$ns_a" 2>/dev/null; then
  echo "skipped: network namespaces are unavailable (they need root and iproute2)"
  exit 77
fi
cleanup() {
  for ns in "$ns_a" "$ns_b"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  ip link del "$bridge" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns_b"
ip link add "$bridge" type bridge
ip addr add 10.231.0.254/24 dev "$bridge"
ip link set "$bridge" up
address=1
for ns in "$ns_a" "$ns_b"; do
  ip link add "v$address$tag" type veth peer name eth0 netns "$ns"
  ip link set "v$address$tag" master "$bridge" up
  ip -n "$ns" addr add "10.231.0.$address/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  address=$((address + 1))
done
# The launch agent: "agent HOST COMMAND..." runs the daemon in HOST's
# namespace, with session files of its own: the hosts share one /tmp and
# one host name, and OpenMPI's daemons creating the same session folder at
# once fail ("File exists") where real hosts never meet.
cat > "$dir/agent" <<EOF
#!/bin/sh
host=\$1; shift
case \$host in 10.231.0.1) ns=$ns_a ;; 10.231.0.2) ns=$ns_b ;; *) echo "no host \$host" >&2; exit 1 ;; esac
mkdir -p "$dir/session/\$host"
exec ip netns exec \$ns env OMPI_MCA_orte_tmpdir_base="$dir/session/\$host" sh -c "\$*"
EOF
chmod +x "$dir/agent"
printf '10.231.0.1 slots=1\n10.231.0.2 slots=1\n' > "$dir/hosts"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
keep_alive() {  # keep_alive SECONDS: OpenMPI gives a silent daemon up after SECONDS + 3 probes a second apart
  export OMPI_MCA_oob_tcp_keepalive_time=$1 OMPI_MCA_oob_tcp_keepalive_intvl=1 OMPI_MCA_oob_tcp_keepalive_probes=3
}
job() {  # job NAME [key=value ...]: the two-host job, in the background
  local name=$1; shift
  mpirun --hostfile "$dir/hosts" --mca plm_rsh_agent "$dir/agent" --mca btl tcp,self --mca rtc ^hwloc \
    --mca btl_tcp_if_include 10.231.0.0/24 --mca oob_tcp_if_include 10.231.0.0/24 -x LT_FAULT \
    -np 2 "$LONGTRAIN" train recipes/tiny-passkey.yaml "${SHORT[@]}" train.threads=1 eval.at_end=false \
    run_dir="$dir/$name" "$@" > "$dir/$name.out" 2> "$dir/$name.err" &
  pid=$!
}
wait_for() {  # wait_for NAME PATTERN: until the job's output shows PATTERN
  for _ in $(seq 600); do grep -q "$2" "$dir/$1.out" 2>/dev/null && return; sleep 0.1; done
  fail "$1: never printed '$2': $(tail -5 "$dir/$1.err")"
}
# Cuts host b's link, then: the job ends within timeout_s plus the
# keep-alive and grace, no process of it is left, and the reachable rank
# named what it waited for.
cut() { ip link set "v2$tag" down; cut_at=$SECONDS; }
job_processes() { ip netns pids "$ns_a"; ip netns pids "$ns_b"; }
# The job has ended within BOUND seconds of the cut, non-zero, and no
# process of it is left 10 s later: expect_end NAME BOUND.
expect_end() {
  for _ in $(seq $(($2 * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && fail "$1: the job still runs $((SECONDS - cut_at)) s after the cut: $(cat "$dir/$1.err")"
  local status=0
  wait "$pid" || status=$?
  [ "$status" -ne 0 ] || fail "$1: exit 0 after a host was cut off"
  local ended=$((SECONDS - cut_at))
  # The cut-off host's processes learn of the end on their own: its daemon
  # by its keep-alive, a rank 5 s after its own abort.
  for _ in $(seq 100); do [ -n "$(job_processes)" ] || break; sleep 0.1; done
  [ -z "$(job_processes)" ] ||
    fail "$1: processes of the job are left 10 s after it ended: $(job_processes | xargs -r ps -o args= -p)"
  echo "ok: $1: the job ended $ended s after the cut, its last process $((SECONDS - cut_at)) s after"
  ip link set "v2$tag" up
}
longtrain_in_b() { ip netns pids "$ns_b" | xargs -r ps -o args= -p 2>/dev/null | grep -c "[l]ongtrain"; }

# Without a fault: as one rank.
LT_FAULT="" job whole
wait "$pid" || fail "the two-host job failed: $(cat "$dir/whole.err")"
"$LONGTRAIN" train recipes/tiny-passkey.yaml "${SHORT[@]}" train.threads=1 eval.at_end=false run_dir="$dir/one" > "$dir/one.out"
python3 - "$dir/whole/metrics.jsonl" "$dir/one/metrics.jsonl" <<'PY' || fail "two hosts differ from one rank"
import json, sys
two, one = ([json.loads(line)["loss"] for line in open(path) if '"loss"' in line] for path in sys.argv[1:])
assert len(two) == len(one) == 4 and all(abs(a - b) <= 1e-7 * abs(b) for a, b in zip(two, one)), (two, one)
PY
echo "ok: two hosts train as one rank"

# As longtrain.sbatch sets it: OpenMPI gives up a silent daemon (here after
# 7 s) before a watchdog (10 s) would fire, so the whole job ends within
# parallel.timeout_s, with OpenMPI's line naming the lost host.
timeout_s=10
keep_alive 4
# During start-up: rank 1 (host b) stalls before the ranks agree, rank 0 waits for it.
LT_FAULT=hang@1:0 job startup train.steps=1000 parallel.timeout_s=$timeout_s
sleep 3
cut
expect_end startup $((timeout_s + 5))
# During a collective: mid-training.
LT_FAULT="" job collective train.steps=100000 parallel.timeout_s=$timeout_s
wait_for collective "step 2/"
cut
expect_end collective $((timeout_s + 5))
# During a checkpoint write: rank 1's write of step 2 never ends and its
# host is cut off; rank 0 waits for its part.
LT_FAULT=hangsave@1:2 job checkpoint train.steps=1000 checkpoint.interval=2 parallel.timeout_s=$timeout_s
wait_for checkpoint "step 2/"
sleep 1
cut
expect_end checkpoint $((timeout_s + 5))
for name in startup collective checkpoint; do
  grep -q "lost communication with a remote daemon" "$dir/$name.err" || fail "$name: $(cat "$dir/$name.err")"
done

# A watchdog shorter than the keep-alive: the reachable rank names what it
# waited for, and the cut-off rank, whose abort reaches no one, leaves on
# its own 5 s later (OpenMPI, still sending the abort to the lost daemon,
# would wait on TCP's retransmissions: the reason to keep the keep-alive
# below parallel.timeout_s).
keep_alive 60
LT_FAULT="" job own train.steps=100000 parallel.timeout_s=3
wait_for own "step 2/"
[ "$(longtrain_in_b)" -eq 1 ] || fail "no rank on host b"
cut
sleep $((3 + 5 + 3))
[ "$(longtrain_in_b)" -eq 0 ] || fail "the cut-off rank is still there $((SECONDS - cut_at)) s after the cut"
grep -q "watchdog: .* on group" "$dir/own.err" || fail "no watchdog line: $(cat "$dir/own.err")"
echo "ok: the cut-off rank left on its own $((SECONDS - cut_at)) s after the cut; rank 0: $(grep -m1 -o "watchdog: [^(]*" "$dir/own.err")"
kill -9 "$pid" 2>/dev/null || true
{ wait "$pid"; } 2>/dev/null || true
echo "lost host ok"
