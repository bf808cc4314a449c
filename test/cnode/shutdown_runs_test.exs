# A clean stop of the C node while runs are in flight: every run is
# cancelled, its subscribers get run_cancelled (the terminal event) before
# its links and monitors are told `shutdown`, awaiters get their answer,
# and the node exits 0 on SIGTERM and on SIGINT alike.
Code.require_file("support.exs", __DIR__)

defmodule CNode.ShutdownRunsTest do
  use ExUnit.Case, async: false
  import CNodeTest

  @slow %{id: "slow", members: [%{id: "a", provider: "mock", options: %{latency_ms: 600_000}}],
          rounds: [%{type: "independent_analysis"}]}

  defp start_run(i, run_id) do
    GenServer.call({:council_ex, i.node},
      {:start_link, %{spec: @slow, input: "q", run_id: run_id, subscribe: [self()]}})
  end

  defp signal_and_wait(i, sig) do
    System.cmd("kill", ["-#{sig}", "#{i.os_pid}"], stderr_to_stdout: true)
    port = i.port_ref
    receive do
      {^port, {:exit_status, st}} -> st
    after
      10_000 -> :timeout
    end
  end

  # every message that arrives until 1 s of quiet, in arrival order
  defp drain(acc) do
    receive do
      m -> drain([m | acc])
    after
      1_000 -> Enum.reverse(acc)
    end
  end

  for sig <- ["TERM", "INT"] do
    test "SIG#{sig} with runs in flight: run_cancelled, then shutdown, exit 0" do
      i = start_node()
      Process.flag(:trap_exit, true)
      ids = for k <- 1..3, do: "stop-#{unquote(sig)}-#{k}-#{System.unique_integer([:positive])}"
      pids = for id <- ids, do: elem({:ok, _} = start_run(i, id), 1)
      refs = Enum.map(pids, &Process.monitor/1)
      for id <- ids, do: assert_receive({:member_started, ^id, _, "a"}, 5_000)
      # an await in flight: sent raw, then a call on the same pid proves it
      # arrived (messages between two processes keep their order)
      tag = make_ref()
      send(hd(pids), {:"$gen_call", {self(), tag}, :await})
      assert {:ok, %{status: :running}} = GenServer.call(hd(pids), :state)

      assert signal_and_wait(i, unquote(sig)) == 0

      msgs = drain([])
      for {id, pid, ref} <- Enum.zip([ids, pids, refs]) do
        ev = Enum.find_index(msgs, &match?({:run_cancelled, ^id, %{}}, &1))
        ex = Enum.find_index(msgs, &match?({:EXIT, ^pid, :shutdown}, &1))
        dn = Enum.find_index(msgs, &match?({:DOWN, ^ref, :process, ^pid, :shutdown}, &1))
        assert ev && ex && dn, inspect(msgs, limit: :infinity)
        # the terminal event comes first, then the exit signals
        assert ev < ex and ev < dn
      end
      assert Enum.any?(msgs, &match?({^tag, {:error, {:cancelled, %{}}}}, &1))
      Process.flag(:trap_exit, false)
    end
  end
end
