# Sourced by the test scripts (scripts/run-beam-tests, scripts/test-deps):
# an epmd port of the script's own, so that the epmd which the library
# starts when none answers (CouncilEx.Node: `epmd -daemon`, as
# `erl -sname` does) listens there and is stopped when the script ends,
# instead of outliving it on the default port. epmd, the VM, :peer nodes
# and the C nodes all read ERL_EPMD_PORT. A caller that sets
# ERL_EPMD_PORT keeps its own epmd and it is left alone. That epmd runs
# with relaxed command checking (ERL_EPMD_RELAXED_COMMAND_CHECK, read
# when it starts): without it, `epmd -kill` is refused while any name is
# still registered (a node slow to exit), and the epmd outlived the script.
#   own_epmd_port   choose the port (call once, early)
#   own_epmd_stop   stop the epmd on it, if one runs (call from the exit trap)
OWN_EPMD=""
own_epmd_port() {
  if [ -z "${ERL_EPMD_PORT:-}" ]; then
    OWN_EPMD=$(scripts/free-port)
    export ERL_EPMD_PORT="$OWN_EPMD"
    export ERL_EPMD_RELAXED_COMMAND_CHECK=1
  fi
}
own_epmd_stop() {
  if [ -n "$OWN_EPMD" ]; then
    epmd -port "$OWN_EPMD" -kill >/dev/null 2>&1 || true
  fi
}
