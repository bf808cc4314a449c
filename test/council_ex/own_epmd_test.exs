defmodule CouncilEx.OwnEpmdTest do
  # scripts/own-epmd.sh (sourced by scripts/run-beam-tests and
  # scripts/test-deps): the epmd started on the script's own port is
  # stopped at the script's end even when a node is still registered
  # there (a C node or a VM slow to exit): epmd refuses `-kill` while its
  # names table is not empty unless it runs with relaxed command checking.
  use ExUnit.Case, async: true

  # registers `name` with the epmd on `port` as a node would (ALIVE2_REQ);
  # the name stays registered while the returned socket is open
  defp register(port, name) do
    {:ok, s} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false, packet: 0])
    req = <<120, 4242::16, 77, 0, 6::16, 5::16, byte_size(name)::16, name::binary, 0::16>>
    :ok = :gen_tcp.send(s, <<byte_size(req)::16, req::binary>>)
    # ALIVE2_RESP (121) or ALIVE2_X_RESP (118), result 0
    assert {:ok, <<tag, 0, _creation::binary>>} = :gen_tcp.recv(s, 0, 5_000)
    assert tag in [118, 121]
    s
  end

  defp epmd_answers?(port) do
    case :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false], 1_000) do
      {:ok, s} ->
        :gen_tcp.close(s)
        true

      {:error, _} ->
        false
    end
  end

  # the scripts run without the sanitizer runtime that run-beam-tests
  # preloads into the VM under test for an ASan NIF (erl's launcher leaks a
  # string at exit: LeakSanitizer's report would fail the run)
  @clean_env for v <- ~w(LD_PRELOAD ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS), do: {v, nil}

  test "own_epmd_stop stops the script's epmd while a node is still registered with it" do
    root = Path.expand("../..", __DIR__)

    # the script's steps: choose the port, start epmd there as the library
    # would (it inherits the environment), then wait for a line and stop it
    script = """
    unset ERL_EPMD_PORT ERL_EPMD_RELAXED_COMMAND_CHECK
    . scripts/own-epmd.sh
    own_epmd_port
    epmd -daemon
    n=0
    while ! epmd -names >/dev/null 2>&1; do
      n=$((n + 1)); [ "$n" -le 400 ] || exit 1; sleep 0.05
    done
    echo "port=$ERL_EPMD_PORT"
    read line
    own_epmd_stop
    echo stopped
    """

    sh =
      Port.open({:spawn_executable, "/bin/sh"}, [
        :binary,
        {:line, 256},
        :exit_status,
        args: ["-c", script],
        cd: root,
        env: for({v, nil} <- @clean_env, do: {String.to_charlist(v), false})
      ])

    port =
      receive do
        {^sh, {:data, {:eol, "port=" <> n}}} -> String.to_integer(n)
      after
        30_000 -> flunk("the script did not start its epmd")
      end

    sock = register(port, "own_epmd_test_#{System.unique_integer([:positive])}")

    try do
      Port.command(sh, "go\n")

      receive do
        {^sh, {:data, {:eol, "stopped"}}} -> :ok
      after
        30_000 -> flunk("the script did not end")
      end

      # epmd closes our registration's socket as it exits
      assert {:error, :closed} = :gen_tcp.recv(sock, 0, 5_000)
      refute epmd_answers?(port)
    after
      :gen_tcp.close(sock)
      # whatever happened above: the epmd of this test goes
      System.cmd("epmd", ["-port", Integer.to_string(port), "-kill"],
        stderr_to_stdout: true,
        env: @clean_env
      )
    end
  end
end
