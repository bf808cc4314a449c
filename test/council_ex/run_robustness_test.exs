defmodule CouncilEx.RunRobustnessTest do
  # run/3, start/3, await/1 and cancel/1 when things around the run go
  # wrong: the relay down, exits of the run, the caller's death.
  use ExUnit.Case, async: false
  @moduletag :cnode

  import CouncilEx.Test.Helpers
  alias CouncilEx.PubSub.Relay
  alias CouncilEx.Test.{Backend, QuickCouncil, SlowCouncil}

  setup do
    Backend.up!()
  end

  # Runs `fun` with the relay stopped; restarts it afterwards.
  defp without_relay(fun) do
    :ok = Supervisor.terminate_child(CouncilEx.AppSupervisor, Relay)

    try do
      fun.()
    after
      {:ok, _} = Supervisor.restart_child(CouncilEx.AppSupervisor, Relay)
    end
  end

  # Runs `fun` in a fresh process (trapping exits or not); its result, or
  # {:died, reason}, or :hung.
  defp in_process(trap?, fun, wait \\ 10_000) do
    parent = self()
    tag = make_ref()

    {pid, mref} =
      spawn_monitor(fn ->
        Process.flag(:trap_exit, trap?)
        send(parent, {tag, fun.(), Process.info(self(), :messages)})
      end)

    receive do
      {^tag, result, messages} ->
        receive do: ({:DOWN, ^mref, _, _, _} -> :ok)
        {result, messages}

      {:DOWN, ^mref, _, _, reason} ->
        {:died, reason}
    after
      wait ->
        Process.exit(pid, :kill)
        :hung
    end
  end

  defp alive_runs, do: Backend.alive_runs()

  test "run/3 leaves no exit signal of its helper in a trapping caller's mailbox" do
    # The helper ends right after sending the result; it used to lose the
    # race against the caller's unlink about 1 run in 20.
    for subscribe <- [false, true] do
      # (with subscribe: true the caller gets the runs' events too)
      assert {results, {:messages, messages}} =
               in_process(
                 true,
                 fn ->
                   for i <- 1..40, do: CouncilEx.run(QuickCouncil, "q#{i}", subscribe: subscribe)
                 end,
                 60_000
               )

      assert Enum.all?(results, &match?({:ok, _}, &1))
      assert for({:EXIT, _, _} = m <- messages, do: m) == []
    end
  end

  @tag :cnode_only
  test "with the relay down, run/3 leaves no exit signal in a trapping caller's mailbox" do
    without_relay(fn ->
      assert {{:error, {:relay_down, :noproc}}, {:messages, []}} =
               in_process(true, fn -> CouncilEx.run(QuickCouncil, "q", timeout: 2_000) end)
    end)
  end

  describe "the relay down" do
    @describetag :cnode_only

    test "run/3 returns an error, trapping or not, and starts no run" do
      without_relay(fn ->
        for trap? <- [true, false] do
          assert {{:error, {:relay_down, :noproc}}, _messages} =
                   in_process(trap?, fn ->
                     CouncilEx.run(QuickCouncil, "q", timeout: 2_000)
                   end)

          assert {{:error, {:relay_down, :noproc}}, _messages} =
                   in_process(trap?, fn ->
                     CouncilEx.run(QuickCouncil, "q", timeout: 2_000, subscribe: true)
                   end)
        end
      end)
    end

    test "start/3 and start_link/3 with subscribe: true return an error and leave no run" do
      id = run_id("norelay")

      without_relay(fn ->
        for trap? <- [true, false] do
          assert {{:error, {:relay_down, :noproc}}, _} =
                   in_process(trap?, fn ->
                     CouncilEx.start(SlowCouncil, "q", subscribe: true, run_id: id)
                   end)

          assert {{:error, {:relay_down, :noproc}}, _} =
                   in_process(trap?, fn ->
                     CouncilEx.start_link(SlowCouncil, "q", subscribe: true, run_id: id)
                   end)
        end

        assert {:error, :not_found} = CouncilEx.RunServer.state(id)
        assert {:error, {:relay_down, :noproc}} = CouncilEx.PubSub.subscribe(id)
        assert :ok = CouncilEx.PubSub.unsubscribe(id)
      end)
    end

    test "a run started for a relay that died meanwhile is cancelled, not left behind" do
      id = run_id("relaydied")
      topic = CouncilEx.Wire.topic(id)
      before = alive_runs()

      result =
        Relay.start_subscribed(topic, self(), fn entries ->
          reply =
            CouncilEx.RunServer.start(
              run_id: id,
              council: SlowCouncil,
              spec: SlowCouncil.__council__(),
              input: "q",
              subscribe: entries
            )

          # The relay that registered us is gone before the start is
          # recorded; a new one is started in its place.
          :ok = Supervisor.terminate_child(CouncilEx.AppSupervisor, Relay)
          {:ok, _} = Supervisor.restart_child(CouncilEx.AppSupervisor, Relay)
          reply
        end)

      assert {:error, {:relay_down, _}} = result
      assert {:error, {:cancelled, _}} = CouncilEx.await(id, 15_000)

      eventually(fn -> alive_runs() <= before end)
    end
  end

  describe "a run process exiting with any reason while called" do
    # A stand-in for a run pid: takes one call and exits with `reason`
    # without answering, as a run ending during the call would.
    defp exits_when_called(reason) do
      spawn(fn ->
        receive do
          {:"$gen_call", _from, _request} -> exit(reason)
        end
      end)
    end

    test "await/1 and cancel/1 by pid treat every exit as the run's end" do
      for reason <- [:killed, :shutdown, :custom, {:shutdown, :x}, {:some, :thing}, :normal] do
        assert {:error, :noproc} = CouncilEx.await(exits_when_called(reason), 5_000)
        assert :ok = CouncilEx.cancel(exits_when_called(reason))
      end
    end

    test "a lost node and a timeout stay errors of their own" do
      assert {:error, :noconnection} = CouncilEx.await(exits_when_called(:noconnection), 5_000)
      assert {:error, :noconnection} = CouncilEx.cancel(exits_when_called(:noconnection))
      silent = spawn(fn -> receive do: (:never -> :ok) end)
      assert {:error, :timeout} = CouncilEx.await(silent, 100)
      Process.exit(silent, :kill)
    end

    test "await/1 of a run stopped with a reason of its own gives its retained outcome" do
      {:ok, pid} = CouncilEx.start(gated_council(), "q")
      parent = self()
      waiter = spawn_link(fn -> send(parent, {:awaited, CouncilEx.await(pid)}) end)
      wait_calling(waiter)
      :ok = GenServer.stop(pid, :my_reason)
      assert_receive {:awaited, {:error, {:cancelled, %{}}}}
      assert :ok = CouncilEx.cancel(pid)
    end

    @tag :cnode_only
    test "council_ex_raw: await and run_call give noproc for any exit; bad text is an error tuple" do
      for reason <- [:killed, {:shutdown, :x}, :custom, :normal] do
        assert {:error, :noproc} = :council_ex_raw.await(exits_when_called(reason), 5_000)
        assert {:error, :noproc} = :council_ex_raw.run_call(exits_when_called(reason), :cancel)
      end

      assert {:error, :noconnection} =
               :council_ex_raw.await(exits_when_called(:noconnection), 5_000)

      node = CouncilEx.node()
      bad = [0xD800]

      for bad_text <- [bad, :an_atom, 42, [1, :x]] do
        assert {:error, {:bad_text, ^bad_text}} = :council_ex_raw.state(node, bad_text)
        assert {:error, {:bad_text, ^bad_text}} = :council_ex_raw.result(node, bad_text)
        assert {:error, {:bad_text, ^bad_text}} = :council_ex_raw.cancel(node, bad_text)
        assert {:error, {:bad_text, ^bad_text}} = :council_ex_raw.whereis(node, bad_text)
        assert {:error, {:bad_text, ^bad_text}} = :council_ex_raw.subscribe(node, bad_text)
        assert {:error, {:bad_text, ^bad_text}} = :council_ex_raw.unsubscribe(node, bad_text)
        assert {:error, {:bad_text, ^bad_text}} = :council_ex_raw.state(node, bad_text, "id")
      end

      assert_raise ErlangError, ~r/bad_text/, fn -> :council_ex_raw.topic(42) end
      assert "council_ex:run:r" = :council_ex_raw.topic(~c"r")
      assert {:error, :not_found} = :council_ex_raw.state(node, ~c"no-such-run")
    end
  end

  describe "after an overflow notice" do
    # run/3's helper, cut off from the events, awaits the run: the
    # caller's death must still cancel it.
    defp run_in_caller(trap?, id) do
      council = gated_council()
      parent = self()

      caller =
        spawn(fn ->
          Process.flag(:trap_exit, trap?)
          send(parent, {:ran, CouncilEx.run(council, "q", run_id: id)})
        end)

      # the gate member is waiting: the run is under way
      receive do
        {:gate_waiting, _member} -> :ok
      after
        15_000 -> flunk("the run did not start")
      end

      [keeper] =
        eventually(fn ->
          match?({:links, [_]}, Process.info(caller, :links)) &&
            elem(Process.info(caller, :links), 1)
        end)

      {caller, keeper}
    end

    # The helper took the notice and waits (in a receive or a call).
    defp idle(keeper) do
      eventually(fn ->
        [status: status, messages: messages] = Process.info(keeper, [:status, :messages])
        status == :waiting and not Enum.any?(messages, &match?({:council_ex_overflow, _, _}, &1))
      end)
    end

    for trap? <- [false, true] do
      test "the caller's exit still cancels the run (caller traps exits: #{trap?})" do
        id = run_id("overflow")
        {caller, keeper} = run_in_caller(unquote(trap?), id)
        send(keeper, {:council_ex_overflow, CouncilEx.Wire.topic(id), 1})
        # the helper is awaiting the run now
        idle(keeper)
        Process.exit(caller, :kill)
        assert {:error, {:cancelled, _}} = CouncilEx.await(id, 10_000)
        eventually(fn -> not Process.alive?(keeper) end)
      end
    end

    test "the run's outcome still comes back" do
      id = run_id("overflow")
      {_caller, keeper} = run_in_caller(false, id)
      send(keeper, {:council_ex_overflow, CouncilEx.Wire.topic(id), 1})
      idle(keeper)
      :ok = CouncilEx.cancel(id)
      assert_receive {:ran, {:error, {:cancelled, _}}}
    end
  end
end
