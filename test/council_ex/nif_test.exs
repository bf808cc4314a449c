defmodule CouncilEx.NifTest do
  # The NIF backend's raw protocol (CouncilEx.Nif): the C node's requests
  # and replies, runs as pids, events straight to subscribers, cleanup by
  # monitors, beam members, and many processes calling at once. Runs with
  # backend :nif (the context is opened by the application).
  use ExUnit.Case, async: true
  @moduletag :nif_only
  doctest CouncilEx.Nif

  alias CouncilEx.Nif
  import CouncilEx.Test.Helpers, only: [eventually: 1, run_id: 1]

  @reg "CouncilEx.Runner.Registry"
  @spec3 ~s({"id":"nif","members":[{"id":"a","provider":"mock","options":{"chunks":3}},
             {"id":"b","provider":"mock","options":{"vote":"A"}},{"id":"c","provider":"mock"}],
             "rounds":[{"type":"independent_analysis"},{"type":"vote"}],"chair":"a"})
  @slow ~s({"id":"slow","members":[{"id":"a","provider":"mock","options":{"latency_ms":600000}}],
            "rounds":[{"type":"independent_analysis"}]})
  @failing ~s({"id":"f","members":[{"id":"x","provider":"mock","options":{"fail_attempts":[1],
               "latency_ms":300}}],"rounds":[{"type":"independent_analysis"}]})
  @brief ~s({"id":"brief","members":[{"id":"a","provider":"mock","options":{"latency_ms":300}}],
             "rounds":[{"type":"independent_analysis"}]})

  @tags [
    :run_started,
    :round_started,
    :member_started,
    :member_token,
    :member_completed,
    :round_completed,
    :tool_call_request,
    :tool_call_result
  ]

  defp events(acc \\ []) do
    receive do
      {t, _, _} = e when t in [:run_completed, :run_cancelled] -> Enum.reverse([e | acc])
      {:run_failed, _, _, _} = e -> Enum.reverse([e | acc])
      e when is_tuple(e) and elem(e, 0) in @tags -> events([e | acc])
    after
      10_000 -> flunk("no terminal event: #{inspect(Enum.reverse(acc))}")
    end
  end

  defp stats do
    {:ok, s} = Nif.call(:stats)
    s
  end

  test "a run streams the C node's event terms to subscribers; await, state, result, whereis" do
    id = run_id("nif")
    input = {:question, "2+2?"}
    assert {:ok, pid} = Nif.start(%{spec: @spec3, input: input, run_id: id, subscribe: [self()]})
    evs = events()
    assert [{:run_started, ^id, "nif", ^input} | _] = evs
    assert length(for {:member_token, ^id, "independent_analysis", "a", _} <- evs, do: 1) == 3

    assert {:run_completed, ^id, %{final: final, rounds: rounds, errors: [], usage: _}} =
             List.last(evs)

    assert is_binary(final) and length(rounds) == 3
    assert {:ok, %{final: ^final}} = Nif.call({:result, @reg, id})

    assert {:ok, %{status: :completed, run_id: ^id, rounds_completed: 3}} =
             Nif.call({:state, @reg, id})

    # ended: no one's (unknown_run), still readable by state and result
    assert {:error, :unknown_run} = Nif.call({:whereis, @reg, id})
    assert {:error, :unknown_run} = Nif.call({:whereis, @reg, "no-such-run"})
    # the pid exits right after the run's events went out
    ref = Process.monitor(pid)
    assert_receive {:DOWN, ^ref, :process, ^pid, reason} when reason in [:normal, :noproc]
    # its id stays taken while it is retained, with no pid to give
    assert {:error, :run_id_retained} = Nif.start(%{spec: @spec3, input: "again", run_id: id})
  end

  test "a request too large to copy on a scheduler (a 300k-term input) is copied on a dirty one" do
    id = run_id("big")
    # a list and a map, each past the copy budget of a normal scheduler
    input = %{rows: Enum.to_list(1..150_000), index: Map.new(1..5_000, &{&1, "v"})}
    assert {:ok, _pid} = Nif.start(%{spec: @spec3, input: input, run_id: id, subscribe: [self()]})
    evs = events()
    assert [{:run_started, ^id, "nif", ^input} | _] = evs
    assert {:run_completed, ^id, _} = List.last(evs)
    # a call of the same size to a run pid goes the same way, answered alike
    {:ok, pid} = Nif.start(%{spec: @slow, input: "q", run_id: run_id("bigcall")})
    huge = {:unknown, Enum.to_list(1..100_000)}
    assert {:error, {:unknown_call, :unknown}} = GenServer.call(pid, huge)
    assert :ok = GenServer.stop(pid)
  end

  test "a run pid answers calls, casts and :sys.get_state as the C node's" do
    id = run_id("calls")
    assert {:ok, pid} = Nif.start(%{spec: @slow, input: "q", run_id: id})
    assert {:ok, ^pid} = Nif.call({:whereis, @reg, id})
    assert GenServer.call(pid, :run_id) == id

    # (the summary as of the run's last round change: its first round has
    # started once its event is out)
    eventually(fn ->
      match?(
        {:ok, %{status: :running, current_round: %{name: "independent_analysis", idx: 0}}},
        GenServer.call(pid, :state)
      )
    end)

    assert %{run_id: ^id, status: :running} = :sys.get_state(pid)
    assert {:error, :running} = GenServer.call(pid, :result)
    assert {:error, {:unknown_call, :nope}} = GenServer.call(pid, :nope)
    assert :ok = GenServer.call(pid, {:subscribe, self()})
    ref = Process.monitor(pid)
    GenServer.cast(pid, :cancel)
    assert_receive {:run_cancelled, ^id, %{rounds: []}}
    assert_receive {:DOWN, ^ref, :process, ^pid, {:shutdown, :cancelled}}
    assert {:error, {:cancelled, _}} = Nif.call({:result, @reg, id})
    catch_exit(GenServer.call(pid, :state))
  end

  test "a run pid's :state follows the run's rounds (its kept answer is not reused once stale)" do
    spec = ~s({"id":"two","members":[{"id":"a","provider":"mock","options":{"latency_ms":300}}],
               "rounds":[{"type":"independent_analysis"},{"type":"vote"}]})

    id = run_id("rounds")
    {:ok, pid} = Nif.start(%{spec: spec, input: "q", run_id: id, subscribe: [self()]})
    assert_receive {:round_started, ^id, "independent_analysis", 0}, 5_000
    # read (and kept by the pid) while the first round runs
    assert {:ok, %{current_round: %{idx: 0}, rounds_completed: 0}} = GenServer.call(pid, :state)
    # read again and again until the next round starts (so that the pid
    # never waits long enough to hibernate, which drops what it kept)
    read = fn read ->
      assert {:ok, %{}} = GenServer.call(pid, :state)

      receive do
        {:round_started, ^id, "vote", 1} -> :ok
      after
        0 -> read.(read)
      end
    end

    read.(read)
    # the snapshot is refreshed before the event goes out (the run may have
    # ended since, on a slow machine: then its pid is gone or says so)
    now =
      try do
        GenServer.call(pid, :state)
      catch
        :exit, _ -> :ended
      end

    assert match?({:ok, %{rounds_completed: n}} when n >= 1, now) or now == :ended,
           inspect(now)

    assert_receive {:run_completed, ^id, _}, 5_000
    ref = Process.monitor(pid)
    assert_receive {:DOWN, ^ref, :process, ^pid, _}
  end

  test "a hibernated run pid answers :state and :run_id from its handle; its kill ends the run" do
    # An idle run's pid holds nothing but the run's handle (a resource
    # object): the summary it answers is read through it, with the round's
    # name the core's own, before and after the pid hibernates; the pid's
    # exit ends the handle, which is how the core learns of a kill.
    id = run_id("handle")
    {:ok, pid} = Nif.start(%{spec: @slow, input: "q", run_id: id, subscribe: [self()]})
    assert_receive {:member_started, ^id, "independent_analysis", "a"}, 5_000

    hibernated = fn ->
      Process.info(pid, :current_function) == {:current_function, {:erlang, :hibernate, 3}}
    end

    expected = %{
      run_id: id,
      council: "slow",
      registry: @reg,
      status: :running,
      current_round: %{idx: 0, name: "independent_analysis"},
      rounds_completed: 0
    }

    for _ <- 1..2 do
      eventually(hibernated)
      assert {:ok, state} = GenServer.call(pid, :state)
      assert Map.take(state, Map.keys(expected)) == expected
      assert is_integer(state.started_at)
      assert GenServer.call(pid, :run_id) == id
      # the state by id agrees
      assert Nif.call({:state, @reg, id}) == {:ok, state}
    end

    ref = Process.monitor(pid)
    Process.exit(pid, :kill)
    assert_receive {:DOWN, ^ref, :process, ^pid, :killed}
    assert_receive {:run_cancelled, ^id, _}, 5_000
    assert {:error, {:cancelled, _}} = Nif.call({:result, @reg, id})
    assert {:error, :unknown_run} = Nif.call({:whereis, @reg, id})
    assert {:ok, %{status: :cancelled, current_round: nil}} = Nif.call({:state, @reg, id})
  end

  test "a start whose run pid is killed before it passes on the start's answer still returns" do
    # The run's pid is held (suspended) as it is spawned, before it can
    # take the core's $council_run (the start's answer to pass on); once
    # that waits in its mailbox, the run is indexed and began, and the pid
    # is killed there. Starts go through the core's thread for this (a
    # start carried out by its NIF call answers the starter itself).
    :ok = Nif.call({:inline, false})
    on_exit(fn -> Nif.call({:inline, true}) end)

    result =
      Enum.find_value(1..50, fn _ ->
        id = run_id("killed-early")
        me = self()

        starter =
          spawn_link(fn ->
            receive do
              :go -> send(me, {:started, Nif.start(%{spec: @slow, input: "q", run_id: id})})
            end
          end)

        :erlang.trace(starter, true, [:procs])
        send(starter, :go)
        pid = receive do: ({:trace, ^starter, :spawn, pid, _} -> pid)
        :erlang.suspend_process(pid)
        :erlang.trace(starter, false, [:procs])

        if Process.info(pid, :current_function) ==
             {:current_function, {CouncilEx.Nif.Run, :init, 2}} do
          eventually(fn ->
            {:messages, ms} = Process.info(pid, :messages)
            Enum.any?(ms, &(is_tuple(&1) and elem(&1, 0) == :"$council_run"))
          end)

          Process.exit(pid, :kill)
          # before the fix the start waited for an answer that never came
          assert_receive {:started, {:ok, ^pid}}, 10_000
          refute Process.alive?(pid)
          :hit
        else
          # it took its answer first: again
          :erlang.resume_process(pid)
          assert_receive {:started, {:ok, ^pid}}, 10_000
          Process.exit(pid, :kill)
          nil
        end
      end)

    assert result == :hit, "the pid took the start's answer every time before it was held"
  end

  test "exit reasons: normal, failed, GenServer.stop's, a kill (the run is cancelled)" do
    {:ok, done} = Nif.start(%{spec: @brief, input: "q"})
    ref = Process.monitor(done)
    assert_receive {:DOWN, ^ref, :process, ^done, :normal}

    {:ok, failed} = Nif.start(%{spec: @failing, input: "q"})
    ref = Process.monitor(failed)
    assert_receive {:DOWN, ^ref, :process, ^failed, {:shutdown, {:failed, [_ | _]}}}

    id = run_id("stop")
    {:ok, stopped} = Nif.start(%{spec: @slow, input: "q", run_id: id, subscribe: [self()]})
    waiter = Task.async(fn -> GenServer.call(stopped, :await, :infinity) end)
    eventually(fn -> match?({:ok, %{status: :running}}, GenServer.call(stopped, :state)) end)
    # the waiter's call is on its way before the stop (it waits for the
    # reply): a waiter scheduled late would find the pid gone (:noproc)
    eventually(fn ->
      Process.info(waiter.pid, [:current_function, :status]) ==
        [current_function: {:gen, :do_call, 4}, status: :waiting]
    end)

    ref = Process.monitor(stopped)
    assert :ok = GenServer.stop(stopped, :my_reason)
    assert_receive {:DOWN, ^ref, :process, ^stopped, :my_reason}
    assert_receive {:run_cancelled, ^id, _}
    assert {:error, {:cancelled, _}} = Task.await(waiter)

    id = run_id("kill")
    {:ok, killed} = Nif.start(%{spec: @slow, input: "q", run_id: id, subscribe: [self()]})
    ref = Process.monitor(killed)
    Process.exit(killed, :kill)
    assert_receive {:DOWN, ^ref, :process, ^killed, :killed}
    assert_receive {:run_cancelled, ^id, _}
    assert {:error, {:cancelled, _}} = Nif.call({:result, @reg, id})
  end

  test "start_link: the run is linked before it begins; the caller's exit cancels it" do
    me = self()
    id = run_id("link")

    caller =
      spawn(fn ->
        {:ok, pid} = Nif.start_link(%{spec: @slow, input: "q", run_id: id, subscribe: [me]})
        send(me, {:run, pid, Process.info(self(), :links)})
        Process.sleep(:infinity)
      end)

    assert_receive {:run, run, {:links, links}}
    assert run in links
    ref = Process.monitor(run)
    Process.exit(caller, :boom)
    assert_receive {:DOWN, ^ref, :process, ^run, reason}
    assert reason == :boom
    assert_receive {:run_cancelled, ^id, _}

    # a refused start_link leaves no link and no exit signal behind
    Process.flag(:trap_exit, true)
    assert {:error, :run_id_retained} = Nif.start_link(%{spec: @slow, input: "q", run_id: id})
    {:ok, running} = Nif.start(%{spec: @slow, input: "q", run_id: id <> "-2"})

    assert {:error, {:already_started, ^running}} =
             Nif.start_link(%{spec: @slow, input: "q", run_id: id <> "-2"})

    :ok = GenServer.call(running, :cancel)
    {:links, links} = Process.info(self(), :links)
    assert links == []
    refute_received {:EXIT, _, _}
  end

  test "subscriptions: plain, tagged and the library's form; duplicates count once" do
    id = run_id("modes")
    topic = "council_ex:run:" <> id
    me = self()
    tagged = spawn_link(fn -> forward(me, :tagged) end)
    lib = spawn_link(fn -> forward(me, :lib) end)
    assert :ok = Nif.call({:subscribe, topic, tagged, :tagged})
    assert :ok = Nif.call({:subscribe, topic, lib, :lib})
    assert :ok = Nif.call({:subscribe, topic, self()})
    assert :ok = Nif.call({:subscribe, topic, self()})

    {:ok, _} =
      Nif.start(%{
        spec: @spec3,
        input: "q",
        run_id: id,
        council: "Elixir.CouncilEx.NifTest",
        subscribe: [self(), {self(), :tagged}]
      })

    plain = events()
    assert [{:run_started, ^id, "Elixir.CouncilEx.NifTest", "q"} | _] = plain
    assert {:round_started, id, "vote", 1} in plain
    assert_receive {:tagged, {:council_ex_event, ^topic, {:run_started, ^id, _, _}}}
    assert_receive {:lib, {:run_started, ^id, CouncilEx.NifTest, "q"}}
    assert_receive {:lib, {:round_started, ^id, :vote, 1}}
    assert_receive {:lib, {:run_completed, ^id, %{rounds: [%{name: :independent_analysis} | _]}}}
    # the subscriptions to the run's own topic ended with its terminal event
    eventually(fn -> stats().subscriptions == 0 end)
    refute_received {:run_started, ^id, _, _}
  end

  test "a subscriber killed mid-run is unsubscribed at once, before its run ends" do
    id = run_id("dead-sub")
    subs = for _ <- 1..5, do: spawn(fn -> Process.sleep(:infinity) end)
    before = stats()
    {:ok, pid} = Nif.start(%{spec: @slow, input: "q", run_id: id, subscribe: subs})
    assert stats().subscriptions >= before.subscriptions + 5
    Enum.each(subs, &Process.exit(&1, :kill))
    eventually(fn -> stats().subscriptions == before.subscriptions end)
    assert stats().pids == before.pids
    assert Process.alive?(pid)
    GenServer.cast(pid, :cancel)
  end

  test "a sub-council topic stays subscribed across its nested runs until unsubscribed" do
    id = run_id("parent")
    topic = "council_ex:run:#{id}:sub:inner"
    assert :ok = Nif.call({:subscribe, topic, self()})

    spec = ~s({"id":"outer","members":[{"id":"inner","provider":"council","options":{"spec":
      {"id":"in","members":[{"id":"x","provider":"mock"}],"rounds":[{"type":"independent_analysis"}]}}}],
      "rounds":[{"type":"independent_analysis"},{"type":"independent_analysis","name":"again"}]})

    {:ok, _pid} = Nif.start(%{spec: spec, input: "q", run_id: id})
    assert_receive {:run_completed, sub1, _}
    assert_receive {:run_completed, sub2, _}
    assert sub1 != sub2
    assert :ok = Nif.call({:unsubscribe, topic, self()})
  end

  test "bad requests get the C node's errors" do
    assert {:error, {:invalid_spec, "$", _}} = Nif.start(%{spec: "{not json", input: "q"})

    assert {:error, {:invalid_spec, "members", _}} =
             Nif.start(%{spec: ~s({"id":"x","members":[],"rounds":[]}), input: "q"})

    assert {:error, {:invalid_spec, "members[0].provider", _}} =
             Nif.start(%{spec: ~s({"id":"x","members":[{"id":"a","provider":"nope"}],
                                  "rounds":[{"type":"vote"}]}), input: "q"})

    assert {:error, {:bad_option, :colour}} = Nif.start(%{spec: @spec3, input: "q", colour: 1})
    assert {:error, {:bad_option, :input}} = Nif.start(%{spec: @spec3})

    assert {:error, {:bad_option, :subscribe}} =
             Nif.start(%{spec: @spec3, input: "q", run_id: "x1", subscribe: [:not_a_pid]})

    assert {:error, {:bad_option, :run_id}} = Nif.start(%{spec: @spec3, input: "q", run_id: ""})
    assert {:error, :not_found} = Nif.call({:state, @reg, "x1"})
    assert {:error, :not_found} = Nif.call({:result, "other", "x1"})
    assert {:error, :badarg} = Nif.call({:state, 42, "x1"})
    assert {:error, :badarg} = Nif.call({:subscribe, "", self()})
    assert {:error, :badarg} = Nif.call({:subscribe, "t", self(), :sideways})
    assert {:error, {:unknown_call, :what}} = Nif.call({:what, 1})
    assert {:error, {:unknown_call, :map}} = Nif.call(%{big: :binary.copy("x", 1_000_000)})
    assert {:error, {:bad_option, :binary}} = Nif.start(%{"spec" => @spec3, input: "q"})
    assert :pong = Nif.call(:ping)
    # a spec given as a term, as the C node takes it
    spec = %{
      id: "t",
      members: [%{id: "a", provider: "mock"}],
      rounds: [%{type: :independent_analysis}]
    }

    assert {:ok, _pid} = Nif.start(%{spec: spec, input: "q", subscribe: [self()]})
    assert {:run_completed, _, %{final: "a: independent_analysis" <> _}} = List.last(events())
  end

  test "System.schedulers_online() * 100 processes start and call runs at once" do
    n = System.schedulers_online() * 100

    tasks =
      for i <- 1..n do
        Task.async(fn ->
          {:ok, pid} = Nif.start(%{spec: @slow, input: "q#{i}", run_id: run_id("many")})
          id = GenServer.call(pid, :run_id)
          {:ok, %{status: :running}} = GenServer.call(pid, :state)
          {:ok, ^pid} = Nif.call({:whereis, @reg, id})
          ref = Process.monitor(pid)
          :ok = GenServer.call(pid, :cancel)

          receive do
            {:DOWN, ^ref, :process, ^pid, reason} ->
              {reason, Nif.call({:whereis, @reg, id}), Nif.call({:state, @reg, id})}
          end
        end)
      end

    for result <- Task.await_many(tasks, 60_000) do
      assert {{:shutdown, :cancelled}, {:error, :unknown_run}, {:ok, %{status: :cancelled}}} =
               result
    end
  end

  test "many processes run councils at once, every event delivered" do
    tasks =
      for i <- 1..200 do
        Task.async(fn ->
          {:ok, pid} = Nif.start(%{spec: @spec3, input: "q#{i}", subscribe: [self()]})
          evs = events()
          {pid, evs}
        end)
      end

    for {_pid, evs} <- Task.await_many(tasks, 30_000) do
      assert {:run_completed, _, %{final: _}} = List.last(evs)
      assert length(evs) == length(Enum.uniq_by(evs, & &1))
    end
  end

  test "beam members and tools: calls go to the member server, replies through the run pid" do
    spec = ~s({"id":"b","members":[{"id":"e","provider":"beam"},{"id":"m","provider":"mock"}],
               "rounds":[{"type":"independent_analysis"}],"limits":{"member_timeout_ms":5000}})

    me = self()

    server =
      spawn_link(fn ->
        receive do
          {:council_member_call, run, call_id, request} ->
            send(me, {:request, run, request})
            send(run, {:council_member_token, call_id, "to"})
            send(run, {:council_member_token, call_id + 1_000_000, "stray"})
            send(run, {:council_member_reply, call_id, {:ok, "done"}})
        end

        Process.sleep(:infinity)
      end)

    {:ok, pid} =
      Nif.start(%{
        spec: spec,
        input: "q",
        user_opts: {:opts, [1]},
        member_server: server,
        subscribe: [self()]
      })

    assert_receive {:request, ^pid,
                    %{
                      "member_id" => "e",
                      "options" => %{},
                      "user_opts" => {:opts, [1]},
                      "input" => "q"
                    }}

    evs = events()

    assert {:member_token, _, _, "e", "to"} =
             Enum.find(evs, &match?({:member_token, _, _, "e", _}, &1))

    assert {:run_completed, _, %{rounds: [%{members: members}]}} = List.last(evs)
    assert %{status: :ok, text: "done"} = Enum.find(members, &(&1.member_id == "e"))

    # a run without a member server: a member error, the run goes on
    {:ok, _} = Nif.start(%{spec: spec, input: "q", subscribe: [self()]})
    assert {:run_completed, _, %{rounds: [%{members: members}]}} = List.last(events())

    assert %{status: :error, error: "beam provider: this run has no member server" <> _} =
             Enum.find(members, &(&1.member_id == "e"))

    # a member server that dies: its calls fail with the reason
    dying =
      spawn(fn ->
        receive do
          {:council_member_call, _run, _id, _} -> exit(:gone_away)
        end
      end)

    {:ok, _} = Nif.start(%{spec: spec, input: "q", member_server: dying, subscribe: [self()]})
    assert {:run_completed, _, %{rounds: [%{members: members}]}} = List.last(events())

    assert %{status: :error, error: "beam provider: member server down: gone_away"} =
             Enum.find(members, &(&1.member_id == "e"))
  end

  defp forward(to, tag) do
    receive do
      m ->
        send(to, {tag, m})
        forward(to, tag)
    end
  end
end
