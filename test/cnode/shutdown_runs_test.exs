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
      30_000 -> :timeout
    end
  end

  # Every message, in arrival order, until what came satisfies `done?` (or
  # nothing more comes for 30 s). The node's exit status reaches us through
  # its port, its last messages through the distribution connection: they
  # may come after the status, so wait for them, not for a quiet second.
  defp drain(acc, done?) do
    msgs = Enum.reverse(acc)

    if done?.(msgs) do
      msgs
    else
      receive do
        m -> drain([m | acc], done?)
      after
        30_000 -> msgs
      end
    end
  end

  for sig <- ["TERM", "INT"] do
    test "SIG#{sig} with runs in flight: run_cancelled, then shutdown, exit 0" do
      i = start_node()
      Process.flag(:trap_exit, true)
      ids = for k <- 1..3, do: "stop-#{unquote(sig)}-#{k}-#{System.unique_integer([:positive])}"
      pids = for id <- ids, do: elem({:ok, _} = start_run(i, id), 1)
      refs = Enum.map(pids, &Process.monitor/1)
      for id <- ids, do: assert_receive({:member_started, ^id, _, "a"}, 15_000)
      # an await in flight: sent raw, then a call on the same pid proves it
      # arrived (messages between two processes keep their order)
      tag = make_ref()
      send(hd(pids), {:"$gen_call", {self(), tag}, :await})
      assert {:ok, %{status: :running}} = GenServer.call(hd(pids), :state)

      assert signal_and_wait(i, unquote(sig)) == 0

      expected =
        Enum.flat_map(Enum.zip([ids, pids, refs]), fn {id, pid, ref} ->
          [&match?({:run_cancelled, ^id, %{}}, &1), &match?({:EXIT, ^pid, :shutdown}, &1),
           &match?({:DOWN, ^ref, :process, ^pid, :shutdown}, &1)]
        end) ++ [&match?({^tag, _}, &1)]
      msgs = drain([], fn msgs -> Enum.all?(expected, &Enum.any?(msgs, &1)) end)
      for {id, pid, ref} <- Enum.zip([ids, pids, refs]) do
        ev = Enum.find_index(msgs, &match?({:run_cancelled, ^id, %{}}, &1))
        ex = Enum.find_index(msgs, &match?({:EXIT, ^pid, :shutdown}, &1))
        dn = Enum.find_index(msgs, &match?({:DOWN, ^ref, :process, ^pid, :shutdown}, &1))
        assert ev && ex && dn, inspect(msgs, limit: :infinity)
        # the terminal event comes first, then the exit signals
        assert ev < ex and ev < dn
      end
      # the result of a run cancelled before any round ended, in its exact
      # shape (empty lists are lists, no stray keys)
      empty = %{final: nil, rounds: [], errors: [], error_info: [],
                usage: %{input_tokens: 0, output_tokens: 0, cost: nil}}
      for id <- ids do
        assert {:run_cancelled, ^id, %{duration_us: us} = result} =
                 Enum.find(msgs, &match?({:run_cancelled, ^id, _}, &1))
        assert is_integer(us)
        assert Map.delete(result, :duration_us) == empty
      end
      assert {^tag, {:error, {:cancelled, result}}} = Enum.find(msgs, &match?({^tag, _}, &1))
      assert Map.delete(result, :duration_us) == empty
      Process.flag(:trap_exit, false)
    end
  end
end
