defmodule CouncilExTest.ChattyCouncil do
  @moduledoc "One member streaming a token every ~5 ms for 20 s: a run that talks all the time."
  use CouncilEx

  member :talker,
    provider: :mock,
    latency_ms: 20_000,
    chunks: 4_000,
    answer: String.duplicate("x", 4_000)

  round :independent_analysis
  limits member_timeout_ms: 60_000
end

defmodule CouncilExTest do
  use ExUnit.Case, async: false
  @moduletag :cnode

  import CouncilEx.Test.Helpers
  alias CouncilEx.RunServer
  alias CouncilEx.Test.{Backend, FailingCouncil, MockCouncil, QuickCouncil, SlowCouncil}
  alias CouncilExTest.ChattyCouncil

  # the C node's counts, or the NIF's
  defp node_stats, do: Backend.stats()

  # Every message of the mailbox that is an event of run `id` (or an
  # overflow notice of its topic).
  defp events_of(id) do
    {:messages, msgs} = Process.info(self(), :messages)
    topic = "council_ex:run:" <> id

    Enum.filter(
      msgs,
      &(match?({:council_ex_overflow, ^topic, _}, &1) or
          (is_tuple(&1) and tuple_size(&1) >= 3 and elem(&1, 1) == id))
    )
  end

  test "exec runs only the programs of config :council_ex, :exec_allow (config/config.exs)" do
    spec = fn argv ->
      CouncilEx.Spec.new!(id: "x", members: [[id: :e, provider: :exec, argv: argv]],
                          rounds: [[type: :independent_analysis]])
    end

    assert {:ok, %{final: final}} = CouncilEx.run(spec.(["cat"]), "from the test")
    assert final =~ "from the test"

    assert CouncilEx.start(spec.(["/bin/sh", "-c", "id"]), "q") ==
             {:error,
              {:invalid_council,
               [%{code: :invalid_spec, message: "program not allowed",
                  path: "members[0].options.argv"}]}}
  end

  test "run/3 returns the final answer and every round's result" do
    assert {:ok, %{final: final, rounds: rounds, errors: []}} =
             CouncilEx.run(MockCouncil, "Which plan?")

    assert is_binary(final) and final != ""
    # The chair's synthesis comes last, as a round named "chair".
    assert Enum.map(rounds, & &1.name) == [
             :independent_analysis,
             :anonymized_peer_review,
             :vote,
             :chair
           ]

    assert List.last(rounds).text == final
    vote = Enum.find(rounds, &(&1.name == :vote))
    assert %{"tally" => tally, "winner" => winner} = vote.aggregate
    assert is_map(tally) and is_binary(winner)
    assert Enum.all?(vote.members, &(&1.status == :ok))
  end

  test "start/3 gives a run pid (of the C node, or of this VM with the NIF); await/2 waits for it" do
    # gated: the run is still there for the calls below, however loaded
    # the machine (a quick council may already have ended)
    assert {:ok, pid} = CouncilEx.start(gated_council(), "q")
    assert node(pid) == Backend.run_node()
    assert is_binary(RunServer.run_id(pid))
    waiter = Task.async(fn -> CouncilEx.await(pid, 30_000) end)
    wait_calling(waiter.pid)
    open_gate()
    assert {:ok, %{final: _} = result} = Task.await(waiter, 30_000)
    # A run that has ended exits calls with :noproc at once; await/2 then
    # answers with the outcome the C node retains.
    assert {:noproc, _} = catch_exit(GenServer.call(pid, :await, 15_000))
    assert {:ok, ^result} = CouncilEx.await(pid, 15_000)
  end

  test "await/2 after the run ended gives its outcome, by pid and by run id" do
    id = run_id()
    {:ok, pid} = CouncilEx.start(MockCouncil, "q", run_id: id)
    wait_down(pid)
    assert {:ok, %{final: final, rounds: rounds}} = CouncilEx.await(pid)
    assert is_binary(final)
    assert List.last(rounds).name == :chair
    assert {:ok, %{final: ^final}} = CouncilEx.await(id)

    failed = run_id()
    {:ok, pid} = CouncilEx.start(FailingCouncil, "q", run_id: failed)
    wait_down(pid)
    assert {:error, {:failed, [_ | _] = errors, %{errors: errors}}} = CouncilEx.await(pid)
    assert {:error, {:failed, ^errors, _}} = CouncilEx.await(failed)

    cancelled = run_id()
    {:ok, pid} = CouncilEx.start(SlowCouncil, "q", run_id: cancelled, registry: MyApp.OtherReg)
    :ok = CouncilEx.cancel(pid)
    wait_down(pid)
    # by pid the registry is known too
    assert {:error, {:cancelled, %{}}} = CouncilEx.await(pid)
    # by run id: the default registry only
    assert {:error, :not_found} = CouncilEx.await(cancelled)
  end

  test "await/2 by run id waits for a running run; unknown ids are :not_found" do
    id = run_id()
    {:ok, pid} = CouncilEx.start(MockCouncil, "q", run_id: id)
    assert {:ok, %{final: final}} = CouncilEx.await(id, 15_000)
    assert {:ok, %{final: ^final}} = CouncilEx.await(pid)

    slow = run_id()
    {:ok, pid} = CouncilEx.start(SlowCouncil, "q", run_id: slow)
    assert {:error, :timeout} = CouncilEx.await(slow, 100)
    :ok = CouncilEx.cancel(pid)
    assert {:error, {:cancelled, _}} = CouncilEx.await(slow)

    assert {:error, :not_found} = CouncilEx.await("no-such-run-#{System.unique_integer()}")
  end

  test "await/2 by pid: :noproc when the library does not know the run's id or forgot it" do
    # run_id: nil lets the C node pick the id; this VM never learns it.
    opts = [run_id: nil, council: MockCouncil, spec: MockCouncil.__council__(), input: "q"]
    {:ok, pid} = RunServer.start(opts)
    wait_down(pid)
    assert {:error, :noproc} = CouncilEx.await(pid)

    # The index forgets a run once its retention has passed.
    Application.put_env(:council_ex, :run_retention_ms, 0)

    try do
      {:ok, pid} = CouncilEx.start(MockCouncil, "q")
      assert {:ok, _} = CouncilEx.await(pid)
      eventually(fn -> CouncilEx.RunIndex.lookup(pid) == :error end)
      assert {:error, :noproc} = CouncilEx.await(pid)
    after
      Application.delete_env(:council_ex, :run_retention_ms)
    end
  end

  test "await/2 and cancel/1 by pid: a run that ends while the call is made has ended" do
    # A run can end after the call's monitor reached it and before the
    # request did: the call then exits with the run's own reason, as with a
    # GenServer. Stand-ins that end on the request show each such reason.
    for reason <- [:normal, {:shutdown, :cancelled}, {:shutdown, {:failed, ["x"]}}] do
      pid = spawn(fn -> receive do: ({:"$gen_call", _, :await} -> exit(reason)) end)
      assert CouncilEx.await(pid, 5_000) == {:error, :noproc}, inspect(reason)
      pid = spawn(fn -> receive do: ({:"$gen_call", _, :cancel} -> exit(reason)) end)
      assert CouncilEx.cancel(pid) == :ok, inspect(reason)
    end
  end

  test "start/3 with a run id; start_link/3 links the run" do
    id = run_id()
    # gated: a run that completed would already have dropped the link
    assert {:ok, pid} = CouncilEx.start_link(gated_council(), "q", run_id: id)
    assert {:links, links} = Process.info(self(), :links)
    assert pid in links
    assert RunServer.run_id(pid) == id
    open_gate()
    assert {:ok, _} = CouncilEx.await(pid)
    # ended: the id stays taken while the run is retained, with no pid to give
    assert {:error, :run_id_retained} = CouncilEx.start(MockCouncil, "q", run_id: id)
  end

  test "await/2 times out with {:error, :timeout}" do
    {:ok, pid} = CouncilEx.start(SlowCouncil, "q")
    assert {:error, :timeout} = CouncilEx.await(pid, 100)
    assert :ok = CouncilEx.cancel(pid)
  end

  test "cancel/1 by pid and by run id; cancel is idempotent" do
    {:ok, pid} = CouncilEx.start(SlowCouncil, "q")
    task = Task.async(fn -> CouncilEx.await(pid) end)
    # the await is under way before the cancel
    wait_calling(task.pid)
    assert :ok = CouncilEx.cancel(pid)
    assert {:error, {:cancelled, %{}}} = Task.await(task, 30_000)
    assert :ok = CouncilEx.cancel(pid)

    id = run_id()
    {:ok, pid2} = CouncilEx.start(SlowCouncil, "q", run_id: id)
    assert :ok = CouncilEx.cancel(id)

    assert CouncilEx.await(pid2) in [{:error, :noproc}] or
             match?({:error, {:cancelled, _}}, CouncilEx.await(pid2))

    assert {:ok, %{status: :cancelled}} = RunServer.state(id)
    assert {:error, :not_found} = CouncilEx.cancel("no-such-run-#{System.unique_integer()}")
  end

  test "a failed run is an error value for run/3, and the caller lives" do
    assert {:error, {:failed, errors, %{errors: errors}}} = CouncilEx.run(FailingCouncil, "q")
    assert errors != []
    assert Process.alive?(self())
  end

  test "the death of a start_link caller cancels the run" do
    id = run_id()
    parent = self()

    caller =
      spawn(fn ->
        {:ok, pid} = CouncilEx.start_link(SlowCouncil, "q", run_id: id)
        send(parent, {:started, pid})
        receive do: (:never -> :ok)
      end)

    assert_receive {:started, pid}, 15_000
    ref = Process.monitor(pid)
    Process.exit(caller, :kill)
    assert_receive {:DOWN, ^ref, :process, ^pid, :killed}, 15_000
    assert {:ok, %{status: :cancelled}} = RunServer.state(id)
  end

  test "a linked failing run exits its caller with {:shutdown, {:failed, _}}" do
    Process.flag(:trap_exit, true)
    {:ok, pid} = CouncilEx.start_link(FailingCouncil, "q")
    assert_receive {:EXIT, ^pid, {:shutdown, {:failed, _}}}, 15_000
  end

  test "subscribe: true delivers every SPEC section 7 event, in order" do
    id = run_id()
    {:ok, _pid} = CouncilEx.start(MockCouncil, "the input", run_id: id, subscribe: true)
    events = collect_events(id)
    assert is_list(events), "no terminal event: #{inspect(events)}"

    assert [{:run_started, ^id, MockCouncil, "the input"} | _] = events
    assert {:run_completed, ^id, %{final: final}} = List.last(events)
    assert is_binary(final)
    assert Enum.count(events, &(elem(&1, 0) in [:run_completed, :run_failed, :run_cancelled])) == 1

    rounds = for {:round_started, _, name, idx} <- events, do: {name, idx}

    assert rounds == [
             {:independent_analysis, 0},
             {:anonymized_peer_review, 1},
             {:vote, 2},
             {:chair, 3}
           ]

    # Rounds strictly ordered: every event of round i lies between its start and completion.
    for {name, _} <- rounds do
      s = Enum.find_index(events, &match?({:round_started, _, ^name, _}, &1))
      c = Enum.find_index(events, &match?({:round_completed, _, ^name, _}, &1))
      assert s < c

      inside =
        events
        |> Enum.with_index()
        |> Enum.filter(fn {ev, _} ->
          elem(ev, 0) in [:member_started, :member_token, :member_completed] and elem(ev, 2) == name
        end)
        |> Enum.map(&elem(&1, 1))

      assert Enum.all?(inside, &(&1 > s and &1 < c))

      # Each member: started, tokens, completed; tokens add up to the text.
      for member <- if(name == :chair, do: ["alpha"], else: ["alpha", "beta", "gamma"]) do
        mine =
          Enum.filter(
            events,
            &(elem(&1, 0) in [:member_started, :member_token, :member_completed] and
                elem(&1, 2) == name and elem(&1, 3) == member)
          )

        assert [{:member_started, ^id, ^name, ^member} | rest] = mine

        assert {:member_completed, ^id, ^name, ^member, %{status: :ok, text: text}} =
                 List.last(rest)

        tokens = for {:member_token, _, _, _, chunk} <- rest, do: chunk
        if tokens != [], do: assert(Enum.join(tokens) == text)
      end
    end

    assert [_ | _] = for({:member_token, _, :independent_analysis, "beta", _} <- events, do: 1)

    assert {:round_completed, ^id, :vote, %{aggregate: %{"tally" => _}}} =
             Enum.find(events, &match?({:round_completed, _, :vote, _}, &1))
  end

  test "a failing run ends with exactly one :run_failed event, a cancelled one with :run_cancelled" do
    id = run_id()
    {:ok, _} = CouncilEx.start(FailingCouncil, "q", run_id: id, subscribe: true)
    events = collect_events(id)
    assert [{:run_started, ^id, FailingCouncil, "q"} | _] = events
    assert {:run_failed, ^id, [_ | _] = errors, %{errors: errors}} = List.last(events)

    assert [%{status: :error, attempts: 2}] =
             for({:member_completed, _, _, "x", r} <- events, do: r)

    id2 = run_id()
    {:ok, pid} = CouncilEx.start(SlowCouncil, "q", run_id: id2, subscribe: true)
    assert_receive {:member_started, ^id2, :independent_analysis, _}, 15_000
    :ok = CouncilEx.cancel(pid)
    events = collect_events(id2)
    assert {:run_cancelled, ^id2, %{}} = List.last(events)
    assert Enum.count(events, &(elem(&1, 0) in [:run_completed, :run_failed, :run_cancelled])) == 1
  end

  test "start/3 with subscribe: true on a taken run id: {:already_started, pid}, no event of the running run" do
    relay_before = Backend.relay_stats()
    %{subscriptions: node_subs_before} = node_stats()
    id = run_id("taken")
    {:ok, pid} = CouncilEx.start(ChattyCouncil, "q", run_id: id)
    assert_tokens_flowing(pid)

    # The running run sends a token every few ms; a start that subscribed
    # before being refused would catch some of them.
    for _ <- 1..30 do
      assert {:error, {:already_started, ^pid}} =
               CouncilEx.start(ChattyCouncil, "q", run_id: id, subscribe: true)

      assert {:error, {:already_started, ^pid}} =
               CouncilEx.start_link(ChattyCouncil, "q", run_id: id, subscribe: true)

      assert {:error, {:already_started, ^pid}} = CouncilEx.run(ChattyCouncil, "q", run_id: id)

      assert {:error, {:already_started, ^pid}} =
               CouncilEx.run(ChattyCouncil, "q", run_id: id, subscribe: true)
    end

    # No subscription of ours is left (the relay's or the NIF's answer comes
    # after whatever they had sent us), and none came of a refused start.
    assert Backend.relay_stats() == relay_before
    assert Backend.subscribers("council_ex:run:" <> id) == []
    assert events_of(id) == []
    eventually(fn -> node_stats().subscriptions == node_subs_before end)

    # nor of the run's end: its terminal event is made by the time it is
    # down (with the C node, the relay has it before the DOWN comes)
    ref = Process.monitor(pid)
    :ok = CouncilEx.cancel(pid)
    assert_receive {:DOWN, ^ref, :process, ^pid, _}, 10_000
    assert Backend.subscribers("council_ex:run:" <> id) == []
    assert events_of(id) == []
  end

  test "start/3 with subscribe: true on a run id taken and watched here: no event of that run for the refused caller" do
    relay_before = Backend.relay_stats()
    %{subscriptions: node_subs_before} = node_stats()
    id = run_id("watched")
    parent = self()

    # Another local process watches the running run: the relay is
    # subscribed to its topic, so a refused start adds no subscription at
    # the C node and must not see the events the relay gets meanwhile.
    watcher =
      spawn_link(fn ->
        :ok = CouncilEx.PubSub.subscribe(id)
        send(parent, :watching)
        send(parent, {:watched, collect_events(id, 30_000)})
      end)

    assert_receive :watching, 15_000
    {:ok, pid} = CouncilEx.start(ChattyCouncil, "q", run_id: id)
    assert_tokens_flowing(pid)
    # the token watcher's own subscription leaves the C node when it has
    # exited (the node's monitor of it fires): wait for that, so the count
    # below sees only the relay's
    eventually(fn -> node_stats().subscriptions == node_subs_before + 1 end)

    for _ <- 1..30 do
      assert {:error, {:already_started, ^pid}} =
               CouncilEx.start(ChattyCouncil, "q", run_id: id, subscribe: true)

      assert {:error, {:already_started, ^pid}} =
               CouncilEx.run(ChattyCouncil, "q", run_id: id, subscribe: true)
    end

    assert Backend.subscribers("council_ex:run:" <> id) == [watcher]
    assert %{subscriptions: subs} = node_stats()
    assert subs == node_subs_before + 1
    :ok = CouncilEx.cancel(pid)
    assert_receive {:watched, events}, 30_000
    assert [{:run_started, ^id, ChattyCouncil, "q"} | _] = events
    assert {:run_cancelled, ^id, _} = List.last(events)
    assert events_of(id) == []
    eventually(fn -> Backend.relay_stats() == relay_before end)
    eventually(fn -> node_stats().subscriptions == node_subs_before end)
  end

  test "subscribe: true, with the relay subscribed to the topic before the start or not: every event, in order; bookkeeping back" do
    relay_before = Backend.relay_stats()
    %{subscriptions: node_subs_before} = node_stats()
    parent = self()

    for early_subscriber? <- [false, true, false, true] do
      id = run_id("order")

      if early_subscriber? do
        # The relay subscribes to the topic before the run exists; the
        # start then carries no subscription of its own.
        spawn_link(fn ->
          :ok = CouncilEx.PubSub.subscribe(id)
          send(parent, :subscribed)
          send(parent, {:early, collect_events(id)})
        end)

        assert_receive :subscribed, 15_000
      end

      {:ok, _} = CouncilEx.start(MockCouncil, "in", run_id: id, subscribe: true)
      events = collect_events(id)
      assert is_list(events), "no terminal event: #{inspect(events)}"
      assert [{:run_started, ^id, MockCouncil, "in"} | _] = events
      assert {:run_completed, ^id, %{final: final}} = List.last(events)
      assert is_binary(final)

      assert for({:round_started, _, name, idx} <- events, do: {name, idx}) ==
               [independent_analysis: 0, anonymized_peer_review: 1, vote: 2, chair: 3]

      if early_subscriber? do
        assert_receive {:early, ^events}, 15_000
      end

      assert {:ok, %{final: _}} = CouncilEx.run(QuickCouncil, "x", subscribe: true)
      assert {:ok, %{final: _}} = CouncilEx.run(QuickCouncil, "y")
    end

    # run/3 with subscribe: true delivered its events to the caller too
    assert_received {:run_started, _, QuickCouncil, "x"}
    refute_received {:run_started, _, QuickCouncil, "y"}

    eventually(fn -> Backend.relay_stats() == relay_before end)
    eventually(fn -> node_stats().subscriptions == node_subs_before end)
  end

  test "concurrent subscribed starts and subscribes of one run id: the winner gets every event, refused starters none" do
    relay_before = Backend.relay_stats()
    %{subscriptions: node_subs_before} = node_stats()
    parent = self()

    for round <- 1..20 do
      id = run_id("race")

      # Each process makes its call on :go, reports its reply, and on
      # :report sends what it got of the run.
      worker = fn call ->
        spawn_link(fn ->
          send(parent, {:ready, self()})
          receive do: (:go -> :ok)
          send(parent, {:done, self(), call.()})
          receive do: ({:report, wait} -> send(parent, {:report, self(), drain(id, [], wait)}))
        end)
      end

      starters =
        for i <- 1..6 do
          if rem(i, 3) == 0,
            do: worker.(fn -> CouncilEx.run(QuickCouncil, i, run_id: id, subscribe: true) end),
            else: worker.(fn -> CouncilEx.start(QuickCouncil, i, run_id: id, subscribe: true) end)
        end

      subscribers = for _ <- 1..3, do: worker.(fn -> CouncilEx.PubSub.subscribe(id) end)
      all = starters ++ subscribers
      for p <- all, do: assert_receive({:ready, ^p}, 5_000)
      # the order of the calls varies from round to round
      {first, rest} = Enum.split(Enum.shuffle(all), rem(round, 5) + 1)
      for p <- first, do: send(p, :go)
      Process.sleep(rem(round, 3))
      for p <- rest, do: send(p, :go)

      replies = Map.new(all, fn p -> assert_receive({:done, ^p, r}, 30_000) && {p, r} end)
      assert [winner] = for(p <- starters, match?({:ok, _}, replies[p]), do: p)
      # the others: refused with the winner's pid while it runs, or as a
      # retained id once it has ended
      won = replies[winner]

      assert Enum.all?(starters -- [winner], fn p ->
               case replies[p] do
                 {:error, {:already_started, pid}} ->
                   is_pid(pid) and (won == {:ok, pid} or not is_pid(elem(won, 1)))

                 other ->
                   other == {:error, :run_id_retained}
               end
             end)

      assert Enum.all?(subscribers, &(replies[&1] == :ok))

      # the winner gets every event: it waits for the terminal one, however
      # slowly the run goes
      send(winner, {:report, 30_000})
      assert_receive {:report, ^winner, events}, 60_000
      assert [{:run_started, ^id, QuickCouncil, i} | _] = events
      assert is_integer(i)
      assert {:run_completed, ^id, _} = List.last(events)
      assert Enum.count(events, &(elem(&1, 0) == :member_completed)) == 2

      # The relay sends each event to every subscriber at once: those the
      # others were sent are in their mailboxes by now.
      for p <- all -- [winner], do: send(p, {:report, 100})

      for p <- starters -- [winner] do
        assert_receive {:report, ^p, got}, 10_000
        assert got == [], "a refused starter got events of the run: #{inspect(got)}"
      end

      for p <- subscribers do
        # A subscriber that came after the run ended waits for a run that
        # never comes; one that came during it gets its tail, in order.
        assert_receive {:report, ^p, got}, 10_000
        assert got == Enum.drop(events, length(events) - length(got))
      end
    end

    eventually(fn -> Backend.relay_stats() == relay_before end)
    eventually(fn -> node_stats().subscriptions == node_subs_before end)
  end

  # The messages of run `id` in the mailbox, up to its terminal event (or
  # until none has come for `wait` ms).
  defp drain(id, acc, wait) do
    receive do
      {tag, ^id, _} = ev when tag in [:run_completed, :run_cancelled] ->
        Enum.reverse([ev | acc])

      {:run_failed, ^id, _, _} = ev ->
        Enum.reverse([ev | acc])

      ev when is_tuple(ev) and tuple_size(ev) >= 3 and elem(ev, 1) == id ->
        drain(id, [ev | acc], wait)
    after
      wait -> Enum.reverse(acc)
    end
  end

  # Waits until the run has streamed a couple of tokens (to a process of
  # its own, subscribed at the run pid, that is gone afterwards).
  defp assert_tokens_flowing(pid) do
    {watcher, ref} =
      spawn_monitor(fn ->
        :ok = GenServer.call(pid, {:subscribe, self()})
        for _ <- 1..2, do: receive(do: ({:member_token, _, _, _, _} -> :ok))
      end)

    assert_receive {:DOWN, ^ref, :process, ^watcher, :normal}, 15_000
  end

  # Waits until the run's process is gone (a run may end before the monitor
  # is in place: then the reason is :noproc).
  defp wait_down(pid) do
    ref = Process.monitor(pid)
    assert_receive {:DOWN, ^ref, :process, ^pid, _reason}, 30_000
  end
end
